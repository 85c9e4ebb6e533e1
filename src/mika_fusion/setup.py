from setuptools import find_packages, setup

package_name = 'mika_fusion'

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
    description='Debounced fusion of face and voice emotion results.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'fusion_node = mika_fusion.fusion_node:main',
            'emotion_logger = mika_fusion.emotion_logger:main',
            'fusion_benchmark = mika_fusion.benchmark:main',
        ],
    },
)
