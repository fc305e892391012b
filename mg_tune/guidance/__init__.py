"""Model guidance: attributions, localization losses and localization/classification metrics."""

from mg_tune.guidance import attribution, losses, metrics, pruning
from mg_tune.guidance.attribution import *  # noqa: F403
from mg_tune.guidance.losses import *  # noqa: F403
from mg_tune.guidance.metrics import *  # noqa: F403
from mg_tune.guidance.pruning import *  # noqa: F403

# Each module's ``__all__`` is its public API, named once, next to what it names; the package's is their union.
__all__: list[str] = []
__all__ += attribution.__all__
__all__ += losses.__all__
__all__ += metrics.__all__
__all__ += pruning.__all__
