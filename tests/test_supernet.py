"""The weight-sharing CvT: members are slices of one set of weights, and an extracted member is a plain CvT."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cvt
from cvt import UserError
from nas.supernet import ElasticCvT, covering_config
from search_spaces import get_space


def _smallest(space):
    """Every dimension at its first value: the built-in spaces list the smallest first (depth cuts, narrow
    widths, cropped kernels)."""
    return space.decode({p.name: p.values[0] for p in space.params})


def _randomized(supernet: ElasticCvT) -> ElasticCvT:
    """BatchNorm statistics and affine parameters away from their initial values, so slicing them matters."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in supernet.net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.normal_(1, 0.2, generator=gen)
            if isinstance(m, torch.nn.LayerNorm):
                m.bias.normal_(0, 0.2, generator=gen)
    return supernet.eval()


@pytest.fixture(scope="module", params=["cvt13-nas", "cvt"])
def space_and_supernet(request):
    torch.manual_seed(0)
    space = get_space(request.param)
    return space, _randomized(ElasticCvT.for_space(space, num_classes=10))


def test_the_covering_config_holds_every_dimension_at_its_largest():
    space = get_space("cvt")
    covering = covering_config(space)
    assert covering.depths == (2, 4, 16) and covering.embed_dims == (96, 288, 480)
    assert covering.patch_size == (7, 5, 5) and covering.cls_token == (False, False, True)
    assert all(spec.mlp_ratio == 4.0 for i in range(3) for spec in covering.blocks(i))
    with pytest.raises(UserError, match="covers CvT spaces"):
        covering_config(get_space("cct"))


def test_an_extracted_member_equals_the_supernet_in_its_configuration(space_and_supernet):
    space, supernet = space_and_supernet
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    members = [_smallest(space)] + [space.sample_config(seed) for seed in range(3)]
    assert members[0].depths < supernet.covering.depths or space.name == "cvt13-nas"
    for member in members:
        with torch.no_grad():
            inherited = supernet(x, member)
            extracted = supernet.extract(member)
            assert type(extracted) is cvt.CvT and extracted.config == member
            torch.testing.assert_close(extracted(x), inherited, atol=1e-5, rtol=0)


def test_the_largest_member_is_the_plain_cvt_with_the_same_weights(space_and_supernet):
    space, supernet = space_and_supernet
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = cvt.CvT(supernet.covering, num_classes=10).eval()
    plain.load_state_dict(supernet.net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(supernet(x, supernet.covering), plain(x), atol=0, rtol=0)


def test_gradients_reach_only_the_members_slices():
    space = get_space("cvt")
    supernet = ElasticCvT.for_space(space, num_classes=10).train()
    member = _smallest(space)
    supernet(torch.randn(2, 3, 32, 32), member).sum().backward()
    net = supernet.net
    first = net.stage2.blocks[0].mlp.fc1.weight.grad
    hidden, width = int(member.embed_dims[2] * member.blocks(2)[0].mlp_ratio), member.embed_dims[2]
    assert first[:hidden, :width].abs().sum() > 0
    assert first[hidden:].abs().sum() == 0 and first[:, width:].abs().sum() == 0
    last = net.stage2.blocks[len(net.stage2.blocks) - 1].mlp.fc1.weight.grad
    assert last is None or last.abs().sum() == 0  # beyond the member's depth
    kernel = net.stage0.patch_embed.proj.weight.grad  # 7x7 in the supernet, 3x3 in the member: its centre
    k = member.patch_size[0]
    offset = (kernel.shape[-1] - k) // 2
    assert kernel[..., offset:offset + k, offset:offset + k].abs().sum() > 0
    kernel[..., offset:offset + k, offset:offset + k] = 0
    assert kernel.abs().sum() == 0


def test_recalibration_changes_only_the_members_batchnorm_statistics():
    space = get_space("cvt13-nas")
    supernet = _randomized(ElasticCvT.for_space(space, num_classes=10))
    member = space.sample_config(5)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    supernet.recalibrate(member, batches)
    changed = {k for k, v in supernet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith((".running_mean", ".running_var", ".num_batches_tracked")) for k in changed)
    assert all(".conv_proj_" in k for k in changed)
    assert not supernet.training  # the supernet's own mode is left alone
    # The average over the two batches, not an exponential one: the same statistics from the batches in reverse.
    once = {k: supernet.state_dict()[k].clone() for k in changed}
    supernet.recalibrate(member, batches[::-1])
    for k in changed:
        torch.testing.assert_close(supernet.state_dict()[k], once[k], atol=1e-5, rtol=1e-5)


def test_architectures_outside_the_supernet_are_refused_in_one_line():
    space = get_space("cvt13-nas")
    supernet = ElasticCvT.for_space(space, num_classes=10)
    base = supernet.covering
    deeper = base.replace(depths=(1, 2, 11))
    wider = base.replace(embed_dims=(64, 192, 420))
    uneven = base.replace(patch_size=(4, 3, 3))
    for config, why in [(deeper, "stage 2 has 11 blocks, the supernet at most 10"),
                        (wider, "shape"), (uneven, "has no centre")]:
        assert not supernet.covers(config)
        with pytest.raises(UserError, match=why) as err:
            supernet(torch.zeros(1, 3, 32, 32), config)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="act_layer"):
        supernet(torch.zeros(1, 3, 32, 32), base.replace(act_layer="gelu"))


# ---------------------------------------------------------------------------- training
from nas.data import load_dataset  # noqa: E402
from nas.supernet import CPU_RECIPE, GPU_RECIPE, MemberRange, SupernetRecipe, cached_ranges, choose_range, \
    load_supernet, recipe_named, supernet_for, train_supernet  # noqa: E402
from search_spaces import load_space  # noqa: E402

TINY_RECIPE = SupernetRecipe(steps=5, batch_size=16, train_subset=128, pool=20)


@pytest.fixture(scope="module")
def tiny(request):
    from conftest import ROOT

    return MemberRange(load_space(ROOT / "tests" / "data" / "tiny-cvt-space.yaml")), load_dataset("synthetic")


def test_a_killed_supernet_training_resumes_where_it_stopped(tiny, tmp_path):
    members, data = tiny
    whole = train_supernet(members, data, TINY_RECIPE, directory=tmp_path / "whole", device="cpu", threads=1,
                           progress=False)
    assert [h["step"] for h in whole.history] == [5] and {"largest", "smallest", "random"} <= set(whole.history[0])

    def kill_at_3(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(members, data, TINY_RECIPE, directory=tmp_path / "killed", device="cpu", threads=1,
                       checkpoint_s=0, progress=False, on_step=kill_at_3)
    assert (tmp_path / "killed" / "checkpoint.pt").is_file() and not (tmp_path / "killed" / "supernet.pt").exists()
    steps = []
    resumed = train_supernet(members, data, TINY_RECIPE, directory=tmp_path / "killed", device="cpu", threads=1,
                             progress=False, on_step=lambda step, losses: steps.append(step))
    assert steps == [3, 4, 5]  # the checkpoint after step 2; step 3 was lost with the kill
    assert not (tmp_path / "killed" / "checkpoint.pt").exists()
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name  # bit for bit the uninterrupted training


def test_a_cached_supernet_is_reused_and_one_with_other_settings_is_not(tiny, tmp_path):
    members, data = tiny
    calls = []
    first = supernet_for(members, data, TINY_RECIPE, cache_dir=tmp_path, device="cpu", threads=1, progress=False,
                         on_step=lambda step, losses: calls.append(step))
    again = supernet_for(members, data, TINY_RECIPE, cache_dir=tmp_path, device="cpu", threads=1, progress=False,
                         on_step=lambda step, losses: calls.append(step))
    assert len(calls) == TINY_RECIPE.steps and again.path == first.path
    other = supernet_for(members, data, SupernetRecipe(**{**TINY_RECIPE.to_dict(), "lr": 5e-4}), cache_dir=tmp_path,
                         device="cpu", threads=1, progress=False, on_step=lambda step, losses: calls.append(step))
    assert other.path != first.path and len(calls) == 2 * TINY_RECIPE.steps
    narrower = MemberRange(members.space, high=5e6)
    assert supernet_for(narrower, data, TINY_RECIPE, cache_dir=tmp_path, device="cpu", threads=1,
                        progress=False).path not in (first.path, other.path)
    # A foreign file where a supernet should be: one line naming it.
    with pytest.raises(UserError, match="trained with other settings"):
        load_supernet(other.path, expect_key=first.path.parent.name)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pt: not a readable cvt-nas supernet"):
        load_supernet(bad)
    torch.save({"format": "something else"}, bad)
    with pytest.raises(UserError, match="bad.pt: not a cvt-nas supernet"):
        load_supernet(bad)


def test_inherited_accuracy_scores_members_and_extraction_keeps_the_weights(tiny, tmp_path):
    members, data = tiny
    supernet = supernet_for(members, data, TINY_RECIPE, cache_dir=tmp_path, device="cpu", threads=1, progress=False)
    score = supernet.scorer(data, val_images=32)
    configs = members.pool(5, seed=3)
    scores = [score(c) for c in configs]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert score(configs[0]) == scores[0]  # recalibration on fixed batches: the same member, the same score
    assert all(supernet.covers(c) for c in configs)
    assert not supernet.covers(configs[0].replace(embed_dims=(16, 32, 128)))  # wider than the space


def test_a_range_without_members_is_one_clear_line(tiny):
    members, _ = tiny
    with pytest.raises(UserError, match="no members between"):
        MemberRange(members.space, low=1e12, high=2e12).pool(5, seed=0)
    with pytest.raises(UserError, match="not a range"):
        MemberRange(members.space, low=5.0, high=1.0)


def test_a_search_finds_a_cached_range_that_holds_its_budget(tiny, tmp_path):
    members, data = tiny
    space = members.space
    narrow, wide = MemberRange(space, 3e6, 5e6), MemberRange(space, 2e6, 7e6)
    for m in (narrow, wide):
        supernet_for(m, data, TINY_RECIPE, cache_dir=tmp_path, device="cpu", threads=1, progress=False)
    found = cached_ranges(space, data, TINY_RECIPE, cache_dir=tmp_path)
    assert [(m.low, m.high) for m in found] == [(3e6, 5e6), (2e6, 7e6)]  # narrowest first
    assert cached_ranges(space, data, SupernetRecipe(**{**TINY_RECIPE.to_dict(), "lr": 5e-4}), cache_dir=tmp_path) == []
    assert cached_ranges(space, load_dataset("synthetic", seed=1).select(classes=2), TINY_RECIPE,
                         cache_dir=tmp_path) == []  # other data

    def choose(**kwargs):
        m = choose_range(space, data, TINY_RECIPE, cache_dir=tmp_path, **kwargs)
        return m.low, m.high

    assert choose(macs_budget=4e6) == (3e6, 5e6)  # the narrowest that holds it
    assert choose(macs_budget=6e6) == (2e6, 7e6)
    assert choose(macs_budget=8e6) == (4e6, 8e6)  # none holds it: half the budget to the budget, to be trained
    assert choose() == (2e6, 7e6)  # no MACs budget (latency, params): the widest cached
    assert choose(given=(1.0, 2.0), macs_budget=1.5e9) == (1e9, 2e9)
    with pytest.raises(UserError, match="outside the supernet's range 1-2 GMACs"):
        choose(given=(1.0, 2.0), macs_budget=3e9)
    with pytest.raises(UserError, match="give --supernet-range"):
        choose_range(space, data, TINY_RECIPE, cache_dir=tmp_path / "empty")
    # A damaged entry in the cache is passed over, not an error.
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "supernet.json").write_text("{not json")
    assert len(cached_ranges(space, data, TINY_RECIPE, cache_dir=tmp_path)) == 2


def test_recipes_by_name_or_file_and_bad_ones_in_one_line(tmp_path):
    assert recipe_named("auto", "cpu") == CPU_RECIPE and recipe_named("auto", "cuda:0") == GPU_RECIPE
    path = tmp_path / "r.yaml"
    path.write_text("steps: 7\nbatch_size: 8\n")
    assert recipe_named(str(path)) == SupernetRecipe(steps=7, batch_size=8)
    path.write_text("stepz: 7\n")
    with pytest.raises(UserError, match="not a mapping of recipe fields"):
        recipe_named(str(path))
    with pytest.raises(UserError, match="use cpu, gpu, auto or a YAML file"):
        recipe_named("fast")
    with pytest.raises(UserError, match="steps = 0"):
        path.write_text("steps: 0\n")
        recipe_named(str(path))


# ---------------------------------------------------------------------------- searching on a supernet
def test_a_supernet_search_scores_confirms_reuses_and_exports_weights(tmp_path, monkeypatch, capsys):
    import json

    import timm
    from safetensors import safe_open

    from conftest import TINY_SPACE
    from nas.export import main as export_main
    from test_search import TINY_TRAINING, cli, read_csv

    monkeypatch.setenv("CVT_NAS_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps: 4\nbatch_size: 16\ntrain_subset: 128\npool: 10\n")

    def search(out, budget, *extra):
        return cli(["--space", str(TINY_SPACE), "--budget", budget, "--trials", "12", "--out", str(tmp_path / out),
                    *TINY_TRAINING, "--estimator", "supernet", "--supernet-recipe", str(recipe), "--confirm", "2",
                    "--self-check", "0", *extra], capsys)

    code, stdout, stderr = search("first", "4.5MFLOPs")
    assert code == 0, stderr
    assert "supernet: training one for 0.00225-0.0045 GMACs" in stderr
    rows = read_csv(tmp_path / "first" / "trials.csv")
    scored = [r for r in rows if r["status"] == "trained" and r["screening"] == "True"]
    confirmed = [r for r in rows if r["status"] == "trained" and r["screening"] == "False"]
    assert len(scored) == 12 and all(r["rung"] == "0" and r["rung_budget"] == "0" for r in scored)
    assert len(confirmed) == 2 and all(r["rung"] == "2" and r["rung_budget"] == "4" for r in confirmed)
    # The confirmed are the best two scored by non-dominated rank; only they enter the front and the exports.
    front = read_csv(tmp_path / "first" / "pareto.csv")
    assert front and {r["number"] for r in front} <= {r["number"] for r in confirmed}
    by_number = {r["number"]: r for r in scored}
    picked = [float(by_number[r["root"]]["accuracy"]) for r in confirmed]
    assert max(picked) == max(float(r["accuracy"]) for r in scored)  # the most accurate score is confirmed
    assert "12 scored, 2 confirmed at the top rung" in stdout
    manifest = json.loads((tmp_path / "first" / "run.json").read_text())
    supernet_dir = manifest["estimator"]["supernet"]

    # A second budget inside the range: the cached supernet serves it, nothing is trained again.
    code, _, stderr = search("second", "4MFLOPs")
    assert code == 0, stderr
    assert "supernet: training" not in stderr
    assert json.loads((tmp_path / "second" / "run.json").read_text())["estimator"]["supernet"] == supernet_dir

    # Exported with the weights inherited from the supernet: they load with timm and cvt, logits equal.
    code = export_main([str(tmp_path / "first"), "--with-weights", "--out", str(tmp_path / "exports")])
    assert code == 0
    yaml_path = next((tmp_path / "exports").glob("*.yaml"))
    weights = yaml_path.with_suffix(".safetensors")
    assert weights.is_file() and "inherited from supernet" in yaml_path.read_text()
    with safe_open(str(weights), "pt") as f:
        assert f.metadata()["inherited_from"] == Path(supernet_dir).name
    config = cvt.CvTConfig.from_yaml(yaml_path)
    model = timm.create_model("cvt_13", config=str(yaml_path), num_classes=4, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(weights), num_classes=4)).eval()
    plain = cvt.load_checkpoint(cvt.CvT(config, num_classes=4), weights).eval()
    supernet = load_supernet(Path(supernet_dir) / "supernet.pt")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=0, rtol=0)
        torch.testing.assert_close(plain(x), supernet.model.eval()(x, config), atol=1e-5, rtol=0)

    # Bad input: one line, exit 2, nothing written.
    code, _, stderr = search("outside", "4MFLOPs", "--supernet-range", "0.001,0.002")
    assert code == 2 and "lies outside the supernet's range" in stderr and not (tmp_path / "outside").exists()
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli(["--space", str(TINY_SPACE), "--budget", "4.5MFLOPs", "--trials", "1", "--out",
                           str(tmp_path / "proxy"), *TINY_TRAINING, "--rungs", "1", "--self-check", "0"], capsys)
    assert code == 0, stderr
    assert export_main([str(tmp_path / "proxy"), "--with-weights"]) == 2
    assert "searched with --estimator proxy" in capsys.readouterr().err
    code, _, stderr = cli(["--space", "cct", "--budget", "1GFLOPs", "--estimator", "supernet", "--data", "synthetic",
                           "--out", str(tmp_path / "cct")], capsys)
    assert code == 2 and "covers CvT spaces" in stderr and not (tmp_path / "cct").exists()
    (Path(supernet_dir) / "supernet.pt").write_bytes(b"damaged")  # a corrupt cached supernet
    code, _, stderr = search("corrupt", "4.5MFLOPs")
    assert code == 2 and "not a readable cvt-nas supernet" in stderr and not (tmp_path / "corrupt").exists()
