from setuptools import find_packages, setup

package_name = 'mika_personal'

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
    description='Personal fine-tuning: records labelled sessions of one person, prepares '
                'faces and utterances with the nodes\' own code, splits by session and '
                'fine-tunes the shipped face and voice models on them.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'record_session = mika_personal.recorder_node:main',
            'import_session = mika_personal.import_media:main',
            'prepare_sessions = mika_personal.prepare:main',
            'fine_tune = mika_personal.fine_tune:main',
        ],
    },
)
