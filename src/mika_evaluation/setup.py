from setuptools import find_packages, setup

package_name = 'mika_evaluation'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='Mika perception developers',
    maintainer_email='dev@mika-perception.org',
    description='Builds labelled evaluation bags and scores face, voice and fused emotion '
                'output by replaying them offline through the nodes\' own core code, or live '
                'from the running graph while a bag plays.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'build_eval_bag = mika_evaluation.bag_builder:main',
            'evaluate_bag = mika_evaluation.offline:main',
            'tune_fusion = mika_evaluation.tune:main',
            'evaluator_node = mika_evaluation.evaluator_node:main',
            'play_bag = mika_evaluation.play_bag:main',
        ],
    },
)
