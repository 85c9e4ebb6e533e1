from glob import glob

from setuptools import find_packages, setup

package_name = 'mika_perception'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        # the shipped emotion model, its card and figures
        ('share/' + package_name + '/models', glob('models/*.keras') + glob('models/*.md')
         + glob('models/*.json') + glob('models/*.png')),
        # BlazeFace, fetched at setup by mika_perception/fetch_face_detector.py
        ('share/' + package_name + '/models/face_detector',
         glob('models/face_detector/*.tflite') + glob('models/face_detector/*LICENSE')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='Mika perception developers',
    maintainer_email='dev@mika-perception.org',
    description='Face emotion recognition for Mika perception.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'face_node = mika_perception.face_node:main',
            'face_benchmark = mika_perception.benchmark:main',
            'train_face = mika_perception.training.train_face:main',
        ],
    },
)
