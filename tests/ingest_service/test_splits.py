"""Where an upload's image is held out: drawn with the split secret every service on the store
shares, kept in the catalog's record, never told in the job's outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.catalog import Catalog, lesion_group, split_for
from shared.split_secret import SECRET_KEY, load_split_secret
from shared.store import open_store
from tests.ingest_service.conftest import FlakyStore, MakeIngest, noise_images, result_of

pytestmark = pytest.mark.timeout(60)


async def test_uploads_are_drawn_with_the_secret_another_service_created(make_ingest: MakeIngest) -> None:
    ingest = await make_ingest(split_secret=None)  # as deployed: a random secret made in the store
    secret = await load_split_secret(ingest.direct, None)  # e.g. an import ran first

    job = await ingest.wait(await ingest.submit(noise_images(30)))

    assert job.state == "succeeded" and result_of(job).stored == 30
    assert all(o.split is None for o in result_of(job).files)
    records = await Catalog(ingest.direct).records()
    assert len(records) == 30
    assert all(r.split == split_for(lesion_group(r.sha256, r.group), secret) for r in records)
    assert await ingest.direct.list("secrets/") == [SECRET_KEY]


async def test_a_store_that_cannot_give_the_secret_for_a_while_is_ridden_out(
        make_ingest: MakeIngest, tmp_path: Path) -> None:
    flaky = FlakyStore(await open_store((tmp_path / "store").as_uri()))
    ingest = await make_ingest(store=flaky, split_secret=None, store_retry_s=10, store_retry_first_s=0.05,
                               store_retry_max_wait_s=0.2)
    flaky.failing = lambda op, key: key.startswith("secrets/") and flaky.failures < 4

    job = await ingest.wait(await ingest.submit(noise_images(2)), timeout=30)

    assert job.state == "succeeded", job.error
    assert flaky.failures == 4 and ingest.metric("requeues_total") == 0
    secret = await load_split_secret(flaky.inner, None)
    records = await Catalog(flaky.inner).records()
    assert all(r.split == split_for(r.sha256, secret) for r in records) and len(records) == 2
