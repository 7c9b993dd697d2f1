"""Device set-up."""

import keras

from senseflosser import device


def test_describe_names_the_device_and_backend():
    text = device.describe()
    assert text.split(",")[0].split(" ")[0] in {"CPU", "GPU", "TPU"}
    assert text.endswith(keras.backend.backend())
