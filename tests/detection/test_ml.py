"""Models: detection of demo attacks, explanations, artifacts, NumPy vs Keras, refusal of tiny data.

One ``both`` model is trained per module (the only TensorFlow training); its isolation forest and
autoencoder are the single-model cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from capture.demo import ATTACK_CODES, DemoTraffic
from capture.records import ip_to_text
from detection.features import FeatureExtractor, describe
from detection.ml import (
    FOREST_WEIGHT,
    MODEL_KINDS,
    AutoencoderModel,
    CombinedModel,
    Contribution,
    TrainingError,
    _top_indices,
    contributions_as_dicts,
    create_model,
    explain_text,
    load_model,
)

ROOT = Path(__file__).resolve().parents[2]
SYN = 2


@pytest.fixture(scope="module")
def data():
    fx = FeatureExtractor("standard")
    train = fx.transform(DemoTraffic(21).records(40_000))
    benign = fx.transform(DemoTraffic(23).records(20_000))
    d = DemoTraffic(22)
    state = fx.new_state()
    fx.transform(d.records(5000), state)
    attacks = {}
    for kind in ATTACK_CODES:
        d.inject(kind)
        r = d.records(8000)
        attacks[kind] = (r, fx.transform(r, state))
    return {"fx": fx, "train": train, "benign": benign, "attacks": attacks}


@pytest.fixture(scope="module")
def models(data):
    both = create_model("both", data["fx"].names, level="standard", ae={"epochs": 6}).fit(data["train"])
    assert isinstance(both, CombinedModel)
    return {"isolation_forest": both.forest, "autoencoder": both.autoencoder, "both": both}


def _attacker_side(kind, r):
    """The packets the attacker sends (answers from the victim are labelled too, but not tested here)."""
    attack = r["label"] == ATTACK_CODES[kind]
    if kind in ("port_scan", "syn_flood"):
        return attack & (r["tcp_flags"] == SYN)
    if kind == "udp_flood":
        return attack & (r["proto"] == 17)
    return attack & (r["dport"] == 80)  # http flood: bots to the web server


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("attack", sorted(ATTACK_CODES))
def test_attacks_score_above_threshold(models, data, kind, attack):
    model = models[kind]
    r, X = data["attacks"][attack]
    sent = _attacker_side(attack, r)
    assert sent.sum() > 100
    detected = (model.score(X[sent]) > model.threshold).mean()
    assert detected >= 0.8, f"{kind} flags {detected:.0%} of {attack} packets"
    if kind != "isolation_forest":  # the autoencoder also catches the victims' answers
        answers = (r["label"] > 0) & ~sent
        assert (model.score(X[answers]) > model.threshold).mean() >= 0.7


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_normal_traffic_mostly_below_threshold(models, data, kind):
    model = models[kind]
    assert (model.score(data["benign"]) > model.threshold).mean() < 0.03
    train_rate = (model.score(data["train"]) > model.threshold).mean()
    assert train_rate == pytest.approx(1 - model.quantile, abs=0.002)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_explanations_name_the_right_features(models, data, kind):
    model = models[kind]
    r, X = data["attacks"]["port_scan"]
    probes = np.flatnonzero(_attacker_side("port_scan", r))[20::10]
    explained = model.explain(X[probes])
    # A scan shows as many ports contacted, and as resets from the closed ones.
    tops = [e[0].feature for e in explained]
    assert np.mean([("distinct" in f and "port" in f) or "rst" in f for f in tops]) >= 0.8, tops
    assert (
        np.mean([any("distinct" in c.feature and "port" in c.feature for c in e) for e in explained]) >= 0.8
    )

    r, X = data["attacks"]["syn_flood"]
    syns = np.flatnonzero(_attacker_side("syn_flood", r))[50::50]
    tops = [e[0].feature for e in model.explain(X[syns])]
    # rates, SYN counts, or connections opened (distinct source ports of one sender)
    rate_like = ["syn" in f or "per_s" in f or "_w_" in f or "distinct_sports" in f for f in tops]
    assert np.mean(rate_like) >= 0.8, tops


def test_explain_text_reads_like_a_sentence(models, data):
    model = models["both"]
    r, X = data["attacks"]["port_scan"]
    i = np.flatnonzero(_attacker_side("port_scan", r))[150]
    contributions = model.explain(X[i], top=3)[0]
    assert len(contributions) == 3 and contributions[0].contribution >= contributions[1].contribution
    text = explain_text(model, r[i], contributions)
    assert ip_to_text(r[i]["src_ip"], 4) in text
    assert "distinct ports" in text and "normally under" in text
    assert explain_text(model, None, contributions)  # works without the record


def test_explanations_say_what_is_normal_for_values_above_below_and_inside_the_range(models):
    model = models["both"]
    p01, p99, mean = model.stats["p01"], model.stats["p99"], model.stats["mean"]
    names = model.feature_names
    j = next(i for i, n in enumerate(names) if describe(n).kind == "value" and p01[i] < p99[i])
    flag = next(i for i, n in enumerate(names) if describe(n).kind == "flag" and mean[i] == 0)

    def said(index: int, value: float) -> str:
        return explain_text(model, None, [Contribution(names[index], index, 1.0, value, 0.0)])

    assert "; normally under " in said(j, p99[j] + 10 * (p99[j] - p01[j]))
    assert "; normally over " in said(j, p01[j] - 10 * (p99[j] - p01[j]))
    # inside the range is no reason: the packet is unusual for its combination of values
    inside = said(j, (p01[j] + p99[j]) / 2)
    assert inside.startswith("An unusual combination of otherwise normal values (closest to the edge: ")
    assert " to " in inside.split("; normally ")[1]
    assert said(flag, 1.0).endswith("; never seen in training.")  # a rare one: test_wording.py
    assert "never" not in said(flag, 0.0)  # most normal packets are like that: no reason
    # what normally never happens is "normally 0", never "normally under 0"
    never = next(i for i, n in enumerate(names) if describe(n).kind == "value" and p99[i] == 0 == p01[i])
    assert said(never, 50.0).endswith("; normally 0.") or said(never, 50.0).endswith("; normally 0 B.")


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_score_top_gives_the_scores_and_the_flagged_rows_top_features_of_one_pass(models, data, kind):
    """What the worker calls: the scores of ``score``, and for the rows over the threshold the top
    features ``top_features`` ranks, made from the scoring pass itself (not the models run again)."""
    model = models[kind]
    X = np.concatenate([data["benign"][:3000], *(data["attacks"][k][1][::4] for k in sorted(ATTACK_CODES))])

    scores, top = model.score_top(X, 3)

    assert np.array_equal(scores, model.score(X))
    flagged = np.flatnonzero(scores > model.threshold)
    assert 100 < len(flagged) < len(X)
    # (on the whole matrix: the autoencoder's float32 products differ in the last bits between batch sizes)
    assert np.array_equal(top, model.top_features(X, 3)[flagged])


def test_top_features_rank_ties_as_a_stable_sort_does():
    """The flagged rows' top features (a flood's incident evidence) rank as ``explain`` does, a
    stable sort: of equal contributions the lower feature index first, also where the tie straddles
    the last place kept, and contributions that are NaN or -inf (cold) last."""
    rng = np.random.default_rng(7)
    C = rng.integers(0, 3, size=(400, 12)).astype(np.float64)  # small integers: ties everywhere
    C[0] = [1.0, 1.0, 2.0, 2.0, 0, 0, 0, 0, 0, 0, 0, 0]  # the third place: 1.0 at 0 and at 1
    spoiled = C[:50].copy()
    spoiled[rng.random(spoiled.shape) < 0.2] = -np.inf
    spoiled[rng.random(spoiled.shape) < 0.1] = np.nan

    for matrix in (C, spoiled):
        for top in (1, 3, 12):
            expected = np.argsort(-matrix, axis=1, kind="stable")[:, :top]
            assert np.array_equal(_top_indices(matrix, top), expected)
    assert _top_indices(C[:1], 3).tolist() == [[2, 3, 0]]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_batch_explanations_equal_row_by_row_ones(models, data, kind):
    """explain_records (what the worker uses: columns, cached wording, JSON written as text) says
    exactly what explain + explain_text + contributions_as_dicts say for each row on its own."""
    model = models[kind]
    parts = [(data["attacks"][k][0][::97], data["attacks"][k][1][::97]) for k in sorted(ATTACK_CODES)]
    r = np.concatenate([p[0] for p in parts])
    X = np.concatenate([p[1] for p in parts])
    assert len({bytes(ip) for ip in r["src_ip"]}) > 3  # several sources: the address cache is used

    batch = model.explain_records(X, r)

    # The same batch through the row-at-a-time functions. (Rows are explained together: the
    # autoencoder's float32 products differ in the last bits between batch sizes.)
    ranked = model.explain(X)
    C = model._contributions(model.scaler.transform(X))
    assert len(batch) == len(ranked) == len(r)
    for i in range(len(r)):
        assert [c.index for c in ranked[i]] == np.argsort(-C[i], kind="stable")[:3].tolist()
        text, contributions = batch[i]
        assert text == explain_text(model, r[i], ranked[i], row=X[i])
        assert contributions == json.dumps(contributions_as_dicts(ranked[i]))  # the same text, too


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_save_load_roundtrip_gives_identical_scores(models, data, kind, tmp_path):
    model = models[kind]
    X = np.concatenate([data["benign"][:3000], data["attacks"]["udp_flood"][1][:3000]])
    model.save(tmp_path / kind)
    loaded = load_model(tmp_path / kind)
    assert type(loaded) is type(model) and loaded.threshold == model.threshold
    assert loaded.feature_names == model.feature_names
    np.testing.assert_array_equal(loaded.score(X), model.score(X))
    assert [c.feature for c in loaded.explain(X[-1])[0]] == [c.feature for c in model.explain(X[-1])[0]]


def test_numpy_autoencoder_matches_keras(models, data):
    ae = models["autoencoder"]
    assert isinstance(ae, AutoencoderModel) and ae.keras_model is not None
    Z = ae.scaler.transform(np.concatenate([data["benign"][:2000], data["attacks"]["syn_flood"][1][:2000]]))
    expected = ae.keras_model.predict(Z, batch_size=4096, verbose=0)
    np.testing.assert_allclose(ae.reconstruct(Z), expected, rtol=1e-4, atol=1e-4)


def test_scoring_a_saved_autoencoder_does_not_import_tensorflow(models, data, tmp_path):
    models["both"].save(tmp_path / "m")
    np.save(tmp_path / "x.npy", data["benign"][:500])
    code = (
        "import sys, numpy as np; from detection.ml import load_model; "
        f"m = load_model({str(tmp_path / 'm')!r}); m.score(np.load({str(tmp_path / 'x.npy')!r})); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_refuses_to_train_on_too_few_samples(data, kind):
    model = create_model(kind, data["fx"].names)
    with pytest.raises(TrainingError, match=r"need at least 1,000 packets to train, got 37"):
        model.fit(data["train"][:37])
    with pytest.raises(TrainingError, match="features"):
        model.fit(data["train"][:, :5])
    with pytest.raises(ValueError, match="unknown model kind"):
        create_model("svm", data["fx"].names)


def _weighted(model: CombinedModel, X: np.ndarray, forest_weight: float) -> np.ndarray:
    """The combined score recomputed from the two halves' own scores, the forest at ``forest_weight``."""
    Z = model.scaler.transform(X)
    lf = np.log(model.forest._score_scaled(Z) / model.forest.threshold) / model.spreads[0]
    la = np.log(model.autoencoder._score_scaled(Z) / model.autoencoder.threshold) / model.spreads[1]
    return forest_weight * lf + (1 - forest_weight) * la


def test_both_weighs_the_forest_less_than_the_autoencoder(models, data):
    model = models["both"]
    X = np.concatenate([data["benign"][:2000], data["attacks"]["http_flood"][1][:2000]])

    assert 0 < FOREST_WEIGHT < 0.5 and model.forest_weight == FOREST_WEIGHT
    np.testing.assert_allclose(model.score(X), _weighted(model, X, FOREST_WEIGHT), rtol=1e-6, atol=1e-9)


def test_a_both_model_saved_before_the_forest_weight_keeps_its_equal_weights(models, data, tmp_path):
    model = models["both"]
    X = np.concatenate([data["benign"][:1000], data["attacks"]["syn_flood"][1][:1000]])
    model.save(tmp_path / "new")
    model.save(tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["params"]["forest_weight"]  # as saved before the weight existed
    meta_path.write_text(json.dumps(meta))

    new, old = load_model(tmp_path / "new"), load_model(tmp_path / "old")

    assert isinstance(new, CombinedModel) and isinstance(old, CombinedModel)
    assert new.forest_weight == FOREST_WEIGHT and old.forest_weight == 0.5
    np.testing.assert_allclose(new.score(X), model.score(X), rtol=1e-6)
    # its threshold was calibrated on equally weighted scores: it keeps scoring them
    np.testing.assert_allclose(old.score(X), _weighted(old, X, 0.5), rtol=1e-6, atol=1e-9)
    assert old.threshold == model.threshold
