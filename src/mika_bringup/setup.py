from glob import glob

from setuptools import find_packages, setup

package_name = 'mika_bringup'

# The launch files and parameters live at the top of the repository (launch/, config/),
# where users look for them; this package installs them into its share directory so that
# `ros2 launch mika_bringup perception.launch.py` finds them.
setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('../../launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('../../config/*.yaml')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='Mika perception developers',
    maintainer_email='dev@mika-perception.org',
    description='Launch file, parameters and graph runner of Mika perception.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'run_graph = mika_bringup.run_graph:main',
            'sample_player = mika_bringup.sample_player:main',
            'demo = mika_bringup.demo:main',
        ],
    },
)
