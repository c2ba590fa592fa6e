"""Two real gloo ranks on CPU through `accelerate launch`."""

import torch
from helpers import run_two_ranks


def _same_weights(tmp_path):
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_rank_ddp_identical_weights_and_gathered_metrics(tmp_path):
    reports = run_two_ranks("cnn", tmp_path)
    assert all(r["world"] == 2 for r in reports)
    # 101 samples, 8 per rank per step -> ceil(101 / 16) = 7 steps per epoch.
    assert all(r["step"] == 14 for r in reports)
    # gather_for_metrics drops the padding that evens out the last batch: each sample counts once.
    assert all(r["metrics"]["num_samples"] == 101 for r in reports)
    assert reports[0]["metrics"] == reports[1]["metrics"]
    _same_weights(tmp_path)


def test_two_rank_ddp_keeps_lotr_shared_factors_identical(tmp_path):
    reports = run_two_ranks("lotr", tmp_path)
    assert all(r["world"] == 2 and r["factors_moved"] for r in reports)
    _same_weights(tmp_path)


def test_two_rank_ddp_ode_classifier(tmp_path):
    reports = run_two_ranks("ode", tmp_path)
    assert all(r["world"] == 2 and r["step"] == 3 and r["nfe"]["forward"] == 8 for r in reports)
    _same_weights(tmp_path)
