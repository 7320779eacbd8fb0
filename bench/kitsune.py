"""Netmon against a Kitsune-style detector, piece by piece (issue 12: what Kitsune sees that Netmon loses).

    .venv/bin/python bench/kitsune.py DIR [--first 15000] [--focus http_flood,bulk_transfer,slowloris]
                                          [--arms netmon,kitnet,...] [--json PATH]

DIR is bench/make_labeled_capture.sh's output (benign.pcap to train on, test.pcap and labels.csv
to score). Kitsune (Mirsky et al., NDSS 2018) has two parts, and this bench swaps them one at a
time against Netmon's, on the same packets and the same benign training set:

features
    Netmon's (``detection.features`` at ``advanced``, cold statistics neutralised as training and
    scoring do), or ``afterimage`` below: this file's own NumPy rendering of the paper's AfterImage
    (damped statistics at decays 5, 3, 1, 0.1, 0.01 per second over the source MAC-IP, the source
    IP with its 2-D statistics against the destination IP, the host pair's jitter, and the source
    socket with its 2-D statistics against the destination socket; 100 features). Unlike Netmon's
    statistics these are keyed by the packet's *source*, and the 2-D ones carry an approximate
    covariance and correlation of the two directions' sizes.
models
    Netmon's (``detection.ml`` ``both``: robust log scaling, isolation forest + autoencoder,
    trained with TensorFlow; the forest and autoencoder alone are reported beside), or ``KitNET``
    below: the paper's ensemble of small tied-weight sigmoid autoencoders (at most ``m`` = 10
    inputs each) over clusters of correlated features (agglomerative clustering of the
    correlation distance on training data), each fed min-max normalised inputs, and an output
    autoencoder over their reconstruction errors; score = the output's RMSE. ``kitnet_log`` is the
    same ensemble fed Netmon's robust log scaling instead of min-max (what the scaling alone does).

Arms (``--arms``, default all): ``netmon`` (Netmon's models on Netmon's features, the baseline:
detection's public functions, as ``manage.py evaluate_detector`` calls them; beside it the forest
and the autoencoder alone, and ``netmon.equal_weights``: the same two combined with equal weights,
as before ``ml.FOREST_WEIGHT``), ``kitnet``
(KitNET on Netmon's features), ``kitnet_log``, ``netmon_ai`` (Netmon's models on AfterImage
features), ``kitnet_ai`` (KitNET on AfterImage features: the Kitsune reproduction),
``netmon_plus`` (Netmon's models on Netmon's features plus AfterImage's).

Figures: ROC AUC and TPR at 1 % FPR per attack against all benign test packets, over every packet
of the attack and over its first ``--first`` packets (the start of a flood, where the issue saw
Netmon lose). Django is set up against throw-away SQLite (nothing is stored); NETMON_REDIS_URL
is not used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from measure import bench_env  # noqa: E402 - bench/measure.py

DECAYS = (5.0, 3.0, 1.0, 0.1, 0.01)
ARMS = ("netmon", "kitnet", "kitnet_log", "netmon_ai", "kitnet_ai", "netmon_plus")


def setup_django() -> None:
    os.environ.update(
        bench_env(
            f"sqlite:///{ROOT / 'var' / 'bench-kitsune.sqlite3'}",
            os.environ.get("NETMON_REDIS_URL", "redis://127.0.0.1:6379/4"),
        )
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import django

    django.setup()


# ------------------------------------------------------------------------------------ AfterImage


def _host_keys(records: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """Per packet: source host, destination host (the IP, the MAC for non-IP) and source MAC, as ints."""
    words = np.ascontiguousarray(records["src_ip"]).view("<u8").reshape(-1, 2)
    dwords = np.ascontiguousarray(records["dst_ip"]).view("<u8").reshape(-1, 2)
    ip = records["ip_version"] != 0
    # fold the 128-bit addresses into Python ints; non-IP frames use the MAC, tagged apart
    src = np.where(
        ip, words[:, 0] ^ (words[:, 1] * np.uint64(0x9E3779B97F4A7C15)), records["src_mac"] | (1 << 63)
    )
    dst = np.where(
        ip, dwords[:, 0] ^ (dwords[:, 1] * np.uint64(0x9E3779B97F4A7C15)), records["dst_mac"] | (1 << 63)
    )
    return src.tolist(), dst.tolist(), records["src_mac"].tolist()


class _Stream:
    """Damped 1-D statistics of one stream at every decay: weight, linear and squared sums, and the
    last residual (value minus mean), which the 2-D statistics pair with the other stream's."""

    __slots__ = ("ls", "res", "ss", "t", "w")

    def __init__(self, t: float, n: int) -> None:
        self.t = t
        self.w = np.zeros(n)
        self.ls = np.zeros(n)
        self.ss = np.zeros(n)
        self.res = np.zeros(n)


def afterimage(records: np.ndarray, decays: tuple[float, ...] = DECAYS) -> tuple[np.ndarray, list[str]]:
    """AfterImage-style features of ``records`` in capture order (see the module docstring).

    Per decay ``l``: source MAC-IP ``mi_{w,mean,std}``; source IP ``h_{w,mean,std}`` and its 2-D
    statistics against the destination IP ``h_{mag,rad,cov,pcc}``; host pair jitter
    ``jit_{w,mean,std}`` (gaps between its packets); source socket ``hp_{w,mean,std}`` and
    ``hp_{mag,rad,cov,pcc}`` against the destination socket. A 2-D statistic pairs each packet's
    residual with the other stream's last one, damped like the sums (the paper's approximate
    covariance).
    """
    lam = np.asarray(decays, np.float64)
    k = len(lam)
    n = len(records)
    out = np.zeros((n, 20, k), np.float32)
    src, dst, smac = _host_keys(records)
    sport = records["sport"].tolist()
    dport = records["dport"].tolist()
    proto = records["proto"].tolist()
    size = records["length"].astype(np.float64).tolist()
    ts = records["ts"].tolist()
    streams: dict[tuple, _Stream] = {}
    pairs: dict[tuple, list] = {}

    def update(key: tuple, t: float, x: float) -> _Stream:
        s = streams.get(key)
        if s is None:
            s = streams[key] = _Stream(t, k)
        f = np.exp2(-lam * max(t - s.t, 0.0))
        s.w = s.w * f + 1.0
        s.ls = s.ls * f + x
        s.ss = s.ss * f + x * x
        s.t = t
        s.res = x - s.ls / s.w
        return s

    def one_d(s: _Stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = s.ls / s.w
        var = np.abs(s.ss / s.w - mean * mean)
        return mean, var, np.sqrt(var)

    def two_d(a: _Stream, b_key: tuple, pair_key: tuple, t: float) -> tuple[np.ndarray, ...]:
        mean_a, var_a, std_a = one_d(a)
        b = streams.get(b_key)
        if b is None:
            mean_b = var_b = std_b = res_b = np.zeros(k)
        else:
            mean_b, var_b, std_b = one_d(b)
            res_b = b.res
        p = pairs.get(pair_key)
        if p is None:
            p = pairs[pair_key] = [t, np.zeros(k), np.zeros(k)]
        f = np.exp2(-lam * max(t - p[0], 0.0))
        p[0] = t
        p[1] = p[1] * f + a.res * res_b
        p[2] = p[2] * f + 1.0
        cov = p[1] / p[2]
        den = std_a * std_b
        pcc = np.divide(cov, den, out=np.zeros(k), where=den > 0)
        return np.sqrt(mean_a**2 + mean_b**2), np.sqrt(var_a + var_b), cov, pcc

    last_seen: dict[tuple, float] = {}
    for i in range(n):
        t, x = ts[i], size[i]
        row = out[i]
        a = update(("mi", smac[i], src[i]), t, x)
        mean, _, std = one_d(a)
        row[0], row[1], row[2] = a.w, mean, std
        # source IP, and its 2-D statistics against the destination IP
        h = update(("h", src[i]), t, x)
        mean, _, std = one_d(h)
        row[3], row[4], row[5] = h.w, mean, std
        pk = (src[i], dst[i]) if src[i] <= dst[i] else (dst[i], src[i])
        row[6], row[7], row[8], row[9] = two_d(h, ("h", dst[i]), ("h", *pk), t)
        # host pair jitter: gaps between the pair's packets in this direction
        jk = ("jit", src[i], dst[i])
        gap = t - last_seen.get(jk, t)
        last_seen[jk] = t
        j = update(jk, t, gap)
        mean, _, std = one_d(j)
        row[10], row[11], row[12] = j.w, mean, std
        # source socket against the destination socket
        sa, sb = (src[i], proto[i], sport[i]), (dst[i], proto[i], dport[i])
        hp = update(("hp", *sa), t, x)
        mean, _, std = one_d(hp)
        row[13], row[14], row[15] = hp.w, mean, std
        sk = (sa, sb) if sa <= sb else (sb, sa)
        row[16], row[17], row[18], row[19] = two_d(hp, ("hp", *sb), ("hp", *sk), t)
    groups = (
        "mi_w", "mi_mean", "mi_std", "h_w", "h_mean", "h_std", "h_mag", "h_rad", "h_cov", "h_pcc",
        "jit_w", "jit_mean", "jit_std", "hp_w", "hp_mean", "hp_std", "hp_mag", "hp_rad", "hp_cov", "hp_pcc",
    )  # fmt: skip
    names = [f"ai_{g}_l{lam_:g}" for lam_ in decays for g in groups]
    # (n, feature, decay) -> columns grouped by decay, as the names list them
    return out.transpose(0, 2, 1).reshape(n, -1), names


# ------------------------------------------------------------------------------------ KitNET


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


class _TiedAutoencoder:
    """One small autoencoder: sigmoid hidden and output layers sharing one weight matrix, inputs
    min-max normalised on training data (values beyond the training range go beyond [0, 1], which
    a sigmoid output cannot reconstruct: that error is the anomaly). Trained by mini-batch SGD."""

    def __init__(self, d: int, hidden_ratio: float, rng: np.random.Generator) -> None:
        h = max(1, math.ceil(d * hidden_ratio))
        bound = 1.0 / d
        self.W = rng.uniform(-bound, bound, (d, h))
        self.hb = np.zeros(h)
        self.vb = np.zeros(d)
        self.lo = np.zeros(d)
        self.span = np.ones(d)

    def norm(self, X: np.ndarray) -> np.ndarray:
        return (X - self.lo) / self.span

    def fit(self, X: np.ndarray, lr: float, epochs: int, batch: int, rng: np.random.Generator) -> None:
        self.lo = X.min(axis=0)
        self.span = np.maximum(X.max(axis=0) - self.lo, 1e-12)
        N = self.norm(X)
        for _ in range(epochs):
            for lo in range(0, len(N), batch):
                x = N[lo : lo + batch]
                y = _sigmoid(x @ self.W + self.hb)
                z = _sigmoid(y @ self.W.T + self.vb)
                e_out = x - z  # cross-entropy gradient at a sigmoid output
                e_hid = (e_out @ self.W) * y * (1 - y)
                m = len(x)
                self.W += lr * (x.T @ e_hid + e_out.T @ y) / m
                self.hb += lr * e_hid.mean(axis=0)
                self.vb += lr * e_out.mean(axis=0)

    def rmse(self, X: np.ndarray) -> np.ndarray:
        x = self.norm(X)
        z = _sigmoid(_sigmoid(x @ self.W + self.hb) @ self.W.T + self.vb)
        return np.sqrt(((x - z) ** 2).mean(axis=1))


def feature_clusters(X: np.ndarray, m: int) -> list[np.ndarray]:
    """Columns of ``X`` in clusters of at most ``m``: agglomerative clustering (average linkage) of
    the correlation distance 1 - r, the tree cut top-down until every cluster fits."""
    from scipy.cluster.hierarchy import linkage, to_tree
    from scipy.spatial.distance import squareform

    d = X.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(X.astype(np.float64), rowvar=False)
    D = np.clip(1.0 - np.nan_to_num(r, nan=0.0), 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    D = (D + D.T) / 2
    root = to_tree(linkage(squareform(D, checks=False), method="average"))
    out: list[np.ndarray] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.get_count() <= m:
            out.append(np.asarray(node.pre_order(), np.int64))
        else:
            stack += [node.get_right(), node.get_left()]
    assert sorted(np.concatenate(out).tolist()) == list(range(d))
    return out


class KitNET:
    """Ensemble of small autoencoders over clusters of correlated features, and an output
    autoencoder over their RMSEs (the paper's KitNET, trained in mini-batches rather than online)."""

    def __init__(
        self,
        m: int = 10,
        hidden_ratio: float = 0.75,
        lr: float = 0.3,
        epochs: int = 1,
        batch: int = 32,
        seed: int = 0,
        map_rows: int = 20_000,
        max_rows: int = 150_000,
    ) -> None:
        self.m, self.hidden_ratio, self.lr, self.epochs, self.batch = m, hidden_ratio, lr, epochs, batch
        self.rng = np.random.default_rng(seed)
        self.map_rows, self.max_rows = map_rows, max_rows
        self.clusters: list[np.ndarray] = []
        self.ensemble: list[_TiedAutoencoder] = []
        self.output: _TiedAutoencoder | None = None

    def fit(self, X: np.ndarray) -> KitNET:
        X = np.asarray(X, np.float64)
        if len(X) > self.max_rows:  # evenly spread rows: one pass of mini-batches over them
            X = X[np.linspace(0, len(X) - 1, self.max_rows).astype(np.int64)]
        rows = np.arange(0, len(X), max(1, len(X) // self.map_rows))
        self.clusters = feature_clusters(X[rows], self.m)
        order = self.rng.permutation(len(X))
        Xs = X[order]
        self.ensemble = []
        for idx in self.clusters:
            ae = _TiedAutoencoder(len(idx), self.hidden_ratio, self.rng)
            ae.fit(Xs[:, idx], self.lr, self.epochs, self.batch, self.rng)
            self.ensemble.append(ae)
        R = self._errors(Xs)
        self.output = _TiedAutoencoder(R.shape[1], self.hidden_ratio, self.rng)
        self.output.fit(R, self.lr, self.epochs, self.batch, self.rng)
        return self

    def _errors(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack(
            [ae.rmse(X[:, idx]) for ae, idx in zip(self.ensemble, self.clusters, strict=True)]
        )

    def score(self, X: np.ndarray) -> np.ndarray:
        assert self.output is not None
        X = np.asarray(X, np.float64)
        return np.concatenate(
            [self.output.rmse(self._errors(X[lo : lo + 65536])) for lo in range(0, len(X), 65536)]
        )


# ------------------------------------------------------------------------------------ evaluation


def first_packets(codes: np.ndarray, n: int) -> np.ndarray:
    """Mask: benign packets, and each attack's first ``n`` packets."""
    keep = codes == 0
    for code in np.unique(codes[codes != 0]):
        idx = np.flatnonzero(codes == code)
        keep[idx[:n]] = True
    return keep


def arm_figures(codes: np.ndarray, scores: np.ndarray, names: dict[int, str], first: int) -> dict:
    from detection import evaluate

    out = {}
    for label, keep in (("all", np.ones(len(codes), bool)), (f"first{first}", first_packets(codes, first))):
        report = evaluate.evaluate(codes[keep], scores[keep], fprs=(0.01,), names=names)
        out[label] = {
            name: {"auc": b["auc"], "tpr": b["tpr@0.01"], "n": b["n"]}
            for name, b in [("overall", report["overall"]), *report["per_attack"].items()]
        }
    return out


def cached_afterimage(pcap: Path, records: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``afterimage(records)``, kept in var/ beside the pcap's size and time (a Python loop: slow)."""
    st = pcap.stat()
    name = f"{pcap.parent.name}-{pcap.stem}-{st.st_size}-{int(st.st_mtime)}.npz"
    cache = ROOT / "var" / "kitsune-cache" / name
    if cache.exists():
        data = np.load(cache)
        return data["X"], data["names"].tolist()
    X, names = afterimage(records)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, X=X, names=np.asarray(names))
    return X, names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--first", type=int, default=15_000)
    parser.add_argument("--focus", default="http_flood,bulk_transfer,slowloris")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--scores", type=Path, help="write every arm's scores and the labels to this .npz")
    args = parser.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; known: {', '.join(ARMS)}")
    setup_django()

    from detection import ml, scoring, services
    from detection.features import FeatureExtractor
    from detection.management.commands.evaluate_detector import read_labels

    level = "advanced"
    t0 = time.perf_counter()
    train_chunks = list(services.records_from_pcaps([str(args.dir / "benign.pcap")]))
    test_chunks = [c for c in services.records_from_pcaps([str(args.dir / "test.pcap")]) if len(c)]
    test = np.concatenate(test_chunks)
    codes, names = read_labels(str(args.dir / "labels.csv"), len(test))
    X_train, train_records = services.featurise(train_chunks, level)
    fnames = FeatureExtractor(level).names
    print(f"data: {len(train_records):,} training packets, {len(test):,} test packets, "
          f"{X_train.shape[1]} Netmon features ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip

    results: dict[str, dict] = {}
    saved: dict[str, np.ndarray] = {"codes": codes}

    def record(arm: str, scores: np.ndarray) -> None:
        saved[arm] = scores.astype(np.float32)
        results[arm] = arm_figures(codes, scores, names, args.first)

    need_ai = any(a in arms for a in ("netmon_ai", "kitnet_ai", "netmon_plus"))
    if need_ai:
        t0 = time.perf_counter()
        A_train, ai_names = cached_afterimage(args.dir / "benign.pcap", train_records)
        A_test, _ = cached_afterimage(args.dir / "test.pcap", test)
        print(f"afterimage: {len(ai_names)} features ({time.perf_counter() - t0:.0f} s)", flush=True)

    def netmon_model(X: np.ndarray, names_: list[str]):
        return ml.train_model("both", X, names_, train_records, level=level, false_incidents_per_day=24.0)

    def sub_scores(model, X: np.ndarray) -> dict[str, np.ndarray]:
        rf, ra = model._ratios(model.scaler.transform(X))
        return {"forest": rf, "autoencoder": ra}

    X_test = None
    if any(a in arms for a in ("netmon", "kitnet", "kitnet_log", "netmon_plus")):
        t0 = time.perf_counter()
        model = netmon_model(X_train, fnames)
        extractor = FeatureExtractor(level)
        state = extractor.new_state()
        parts = [scoring.score_records(model, extractor, chunk, state) for chunk in test_chunks]
        X_test = np.concatenate([p[0] for p in parts])
        if "netmon" in arms:
            record("netmon", np.concatenate([p[1] for p in parts]))
            for sub, s in sub_scores(model, X_test).items():
                record(f"netmon.{sub}", s)
            # the same two models combined with equal weights, as before ml.FOREST_WEIGHT
            model.forest_weight, weight = 0.5, model.forest_weight
            record("netmon.equal_weights", model.score(X_test))
            model.forest_weight = weight
        print(f"netmon: {time.perf_counter() - t0:.0f} s", flush=True)

    def run_kitnet(arm: str, train: np.ndarray, test: np.ndarray) -> None:
        """One KitNET arm: fitted on ``train``'s rows, scoring ``test``'s."""
        t0 = time.perf_counter()
        kn = KitNET().fit(train)
        record(arm, kn.score(test))
        print(f"{arm}: {len(kn.clusters)} autoencoders ({time.perf_counter() - t0:.0f} s)", flush=True)

    if "kitnet" in arms:
        run_kitnet("kitnet", X_train, X_test)
    if "kitnet_log" in arms:
        run_kitnet("kitnet_log", model.scaler.transform(X_train), model.scaler.transform(X_test))
    if "netmon_ai" in arms:
        t0 = time.perf_counter()
        m_ai = netmon_model(A_train, ai_names)
        record("netmon_ai", m_ai.score(A_test))
        for sub, s in sub_scores(m_ai, A_test).items():
            record(f"netmon_ai.{sub}", s)
        print(f"netmon_ai: {time.perf_counter() - t0:.0f} s", flush=True)
    if "kitnet_ai" in arms:
        run_kitnet("kitnet_ai", A_train, A_test)
    if "netmon_plus" in arms:
        t0 = time.perf_counter()
        m_plus = netmon_model(np.hstack([X_train, A_train]), fnames + ai_names)
        record("netmon_plus", m_plus.score(np.hstack([X_test, A_test])))
        print(f"netmon_plus: {time.perf_counter() - t0:.0f} s", flush=True)

    print_table(results, [f for f in args.focus.split(",") if f], args.first)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    if args.scores:
        np.savez_compressed(args.scores, **saved)
    return 0


def print_table(results: dict, focus: list[str], first: int) -> None:
    attacks = [a for a in next(iter(results.values()))["all"] if a != "overall"] if results else []
    for span in ("all", f"first{first}"):
        print(f"\n== {span}: ROC AUC / TPR at 1 % FPR per attack")
        cols = [a for a in attacks if span == "all" or a in focus]
        print(f"{'arm':<24}" + "".join(f"{a[:15]:>17}" for a in cols))
        for arm, res in results.items():
            cells = []
            for a in cols:
                b = res[span].get(a)
                cells.append(f"{b['auc']:.3f}/{b['tpr']:.3f}" if b else "-")
            print(f"{arm:<24}" + "".join(f"{c:>17}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
