"""`POST /retrain` with `fine_tune`: refused at once (422 `not_enough_images_to_fine_tune`) when
the catalog is too small for it, instead of a job that fails with that error later.

The policy is the trainers': each sends its settings' `FineTunePolicy` in its heartbeat
(`ServiceStatus.fine_tune`, kept by `gateway/workers.py`), and the check is theirs too
(`shared.fine_tune_policy.shortfall`), made on the catalog the Data views read
(`gateway/catalog_view.py`) and on the classes the job would train: the current model's and every
label with training images. The gateway holds no copy of the numbers. It refuses only what every
live trainer would refuse, on the catalog as it is listed now; when a live trainer sent no policy (none
heard yet, or one older than the field) the request is queued as before and the trainer's
job-level check decides, as it does in any case when its job runs (the catalog, the current
model or the trainer may differ by then).
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from gateway.catalog_view import CATALOG_VIEW
from gateway.keys import REGISTRY, WORKERS
from shared.catalog import ImageRecord
from shared.errors import Unprocessable
from shared.fine_tune_policy import FineTunePolicy, shortfall

TRAINER = "trainer_service"


def _labels(records: list[ImageRecord]) -> tuple[Counter[str], Counter[str]]:
    """Training and held-out images per label."""
    return (Counter(r.label for r in records if r.split == "train"),
            Counter(r.label for r in records if r.split == "eval"))


def trainer_policies(app: web.Application) -> list[FineTunePolicy] | None:
    """The fine-tune policy of every live trainer; None when there is none, or when one of them
    sent no policy (its check is unknown here)."""
    policies = [s.fine_tune for s in app[WORKERS].services() if s.service == TRAINER]
    if not policies or any(p is None for p in policies):
        return None
    return [p for p in policies if p is not None]


async def refuse_thin_fine_tune(app: web.Application) -> None:
    """Raise Unprocessable (422, `not_enough_images_to_fine_tune`, naming the thin classes) when
    every live trainer's policy finds the catalog too small to fine-tune on; return otherwise,
    also when no trainer's policy is known (see the module's docstring). Raises what the store
    raises when the catalog or the registry cannot be read. Loop-only."""
    policies = trainer_policies(app)
    if policies is None:
        return
    registry = app[REGISTRY]
    current = await registry.current_version()
    served = (await registry.manifest(current)).classes if current is not None else []
    refusal = await _refusal(app, served, policies)
    if refusal is not None:
        raise refusal


async def _refusal(app: web.Application, served: list[str],
                   policies: list[FineTunePolicy]) -> Unprocessable | None:
    """The first trainer's refusal when every trainer's policy refuses the catalog, else None."""
    trained, judged = await app[CATALOG_VIEW].derived("fine_tune_labels", _labels)
    classes = sorted(set(served) | set(trained))
    refusals = [shortfall(trained, judged, classes, policy) for policy in policies]
    return refusals[0] if all(refusals) else None
