from glob import glob

from setuptools import find_packages, setup

package_name = 'mika_voice'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/models', glob('models/*.keras') + glob('models/*.md')
         + glob('models/*.json') + glob('models/*.png')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='Mika perception developers',
    maintainer_email='dev@mika-perception.org',
    description='Voice emotion recognition for Mika perception.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'voice_node = mika_voice.voice_node:main',
            'voice_benchmark = mika_voice.benchmark:main',
            'train_voice = mika_voice.training.train_voice:main',
        ],
    },
)
