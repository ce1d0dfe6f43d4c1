"""The model families. Importing a family registers its variants with ``create_model``."""

from minibones.models import resnet  # noqa: F401
from minibones.models import vit  # noqa: F401
from minibones.models import convnext  # noqa: F401
from minibones.models import vgg  # noqa: F401
from minibones.models import inception  # noqa: F401
from minibones.models import inception_v3  # noqa: F401
from minibones.models import xception  # noqa: F401
from minibones.models import efficientnet  # noqa: F401
from minibones.models import mobilenet  # noqa: F401
