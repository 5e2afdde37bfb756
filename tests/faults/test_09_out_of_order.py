"""Fault 9: manifests delivered out of order (S3 events are at-least-once and unordered)."""

from __future__ import annotations

import pytest

from tests.faults import harness
from tests.pipeline_helpers import snapshot

# Night indexes: 0 is the history night (day D-1), then D, D+1, D+2.
ORDERS = {
    "D+1 before D, D again after D+2": [0, 2, 1, 3, 1],
    "newest first, history last": [3, 2, 1, 0],
    "D+2 first, then the rest in order, every night twice": [3, 0, 1, 2, 3, 0, 1, 2],
}


@pytest.mark.parametrize("name", list(ORDERS))
def test_out_of_order_deliveries_end_as_the_in_order_run(name, fault, nights, new_target, capsys):
    order = ORDERS[name]
    labels = ["D-1 (history)", "D", "D+1", "D+2"]
    record = fault(
        f"9. out-of-order delivery: {name}",
        "`etl load` of the manifests in the order " + ", ".join(labels[i] for i in order),
    )
    target = new_target()
    bucket = nights.bucket()
    statuses = []
    for index in order:
        code, out, err = harness.etl_here(
            *harness.load_args(bucket, nights.keys[index], target), capsys=capsys
        )
        assert code == 0, "\n".join(err)
        statuses.append(out.split(": ", 1)[1].split(",")[0])
    expected = ["loaded" if order.index(i) == n else "duplicate" for n, i in enumerate(order)]
    assert statuses == expected
    record.check("each manifest loaded once, every repeat a duplicate")
    state = snapshot(target)
    assert harness.analytics_only(state) == harness.analytics_only(nights.final)
    record.check("the three marts equal the in-order run, row for row")
    assert harness.without_load_counts(state) == harness.without_load_counts(nights.final)
    record.check("day and customer versions and the ledger's runs equal it too")
