"""The model families. Importing a family registers its variants with ``create_model``."""

from minibones.models import resnet  # noqa: F401
