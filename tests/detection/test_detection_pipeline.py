"""Detection wired into the product: training command, registry rules, live scoring, API, offline scoring."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from capture.demo import DEMO_RATE, DemoTraffic
from capture.models import Packet, Sensor
from capture.pcapwriter import write_pcap
from capture.records import Batch, encode_batch, ip_to_text, stream_key
from capture.services import update_config
from detection import ingest, ml, scoring, services
from detection.models import Anomaly, DetectionModel, Incident
from tests.detection.trained import trained_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def model_dir(settings, tmp_path):
    settings.NETMON_MODEL_DIR = tmp_path / "models"


@pytest.fixture
def benign_pcap(tmp_path):
    path = tmp_path / "benign.pcap"
    write_pcap(path, DemoTraffic(seed=1, attack_prob=0.0).records(30_000))
    return path


TRAINING = ("--model", "isolation_forest", "--feature-level", "standard")


@pytest.fixture
def freshly_trained(benign_pcap, redis_client):
    """What ``train_detector`` makes, for the tests of the training itself."""
    # ml_model may only name a kind with an active model: train it, then use it (--use)
    call_command("train_detector", "--pcap", str(benign_pcap), *TRAINING, "--use")
    return DetectionModel.objects.get(is_active=True)


@pytest.fixture
def trained(benign_pcap, redis_client):
    """The same model, trained once for the tests of this process (tests/detection/trained.py)."""
    return trained_with(TRAINING, lambda: benign_pcap)


def attack_records(first_seq: int = 1) -> np.ndarray:
    traffic = DemoTraffic(seed=7, attack_prob=0.0)
    traffic.inject("port_scan")
    records = traffic.records(20_000)
    records["seq"] = np.arange(first_seq, first_seq + len(records))
    return records


def publish_in_batches(client, sensor: str, records: np.ndarray, size: int = 2000) -> list[bytes]:
    return [
        client.xadd(stream_key(sensor), encode_batch(Batch(sensor=sensor, records=records[i : i + size])))
        for i in range(0, len(records), size)
    ]


def test_training_creates_an_active_version(freshly_trained):
    trained = freshly_trained
    assert trained.kind == "isolation_forest"
    assert trained.version == 1
    assert trained.feature_level == "standard"
    assert trained.status == "ready"
    assert trained.packet_count == 30_000
    assert trained.threshold is not None
    assert trained.data_from < trained.data_until


def test_second_training_is_a_new_version_and_takes_over(trained, benign_pcap):
    call_command("train_detector", "--pcap", str(benign_pcap))

    versions = dict(
        DetectionModel.objects.filter(kind="isolation_forest").values_list("version", "is_active")
    )
    assert versions == {1: False, 2: True}


def test_too_few_packets_is_refused_with_the_minimum(tmp_path, redis_client):
    small = tmp_path / "small.pcap"
    write_pcap(small, DemoTraffic(seed=2).records(50))

    with pytest.raises(CommandError, match=r"need at least 1,000"):
        call_command("train_detector", "--pcap", str(small), "--model", "isolation_forest")
    assert DetectionModel.objects.get().status == "failed"


def test_model_of_another_feature_level_is_not_activated(trained, client, staff_api):
    update_config({"feature_level": "low"})

    response = staff_api.post(f"/api/models/{trained.pk}/activate")

    assert response.status_code == 409
    assert "trained at feature level standard" in response.json()["detail"]
    assert "configured feature_level is low" in response.json()["detail"]


def _as_if_trained_on_older_features(row: DetectionModel) -> None:
    meta_path = Path(row.artifact_path) / "model.json"
    meta = json.loads(meta_path.read_text())
    # the name of a column before host statistics followed the conversation
    meta["feature_names"][meta["feature_names"].index("client_pkts_per_s")] = "src_pkts_per_s"
    meta_path.write_text(json.dumps(meta))


def test_a_model_trained_on_older_features_stores_packets_unscored_and_says_retrain(
    trained, benign_pcap, redis_client, api, tmp_path
):
    _as_if_trained_on_older_features(trained)
    scoring._models.__init__()  # as in a worker started after the upgrade

    assert scoring.warm_up() is None
    publish_in_batches(redis_client, "old", attack_records()[:3000])
    ingest.drain_sensor("old", redis_client)
    assert Packet.objects.count() == 3000
    assert not Anomaly.objects.exists()

    note = api.get("/api/status").json()["models_note"]
    assert "not scored" in note and "isolation_forest v1" in note and "retrain" in note
    with pytest.raises(CommandError, match="older version of netmon: retrain"):
        call_command("score_pcap", str(benign_pcap), "--out", str(tmp_path / "scores.csv"))
    with pytest.raises(services.ActivationError, match="older version of netmon"):
        services.activate_model(trained)

    # `make run` trains a first model "if none": an outdated one does not count
    call_command("train_detector", "--pcap", str(benign_pcap), "--if-none")
    assert scoring.warm_up().version == 2
    call_command("train_detector", "--pcap", str(benign_pcap), "--if-none")
    assert DetectionModel.objects.count() == 2


def test_status_says_no_active_model_and_how_to_train(api, redis_client):
    body = api.get("/api/status").json()

    assert body["models"] == {}
    assert "train_detector" in body["models_note"]


def test_warm_up_loads_the_model_in_use_once(trained, monkeypatch):
    scoring._models.__init__()  # as in a new process
    loads = []
    real_load = ml.load_model
    monkeypatch.setattr(ml, "load_model", lambda path: loads.append(path) or real_load(path))

    assert scoring.warm_up().pk == trained.pk
    assert loads == [trained.artifact_path]
    loaded = scoring._models.model
    sensor = Sensor.objects.create(name="warm")
    batch = Batch(sensor="warm", records=attack_records()[:500])
    scored = scoring.score_batch(sensor, batch, ingest.SensorState())
    assert scored is not None and scoring._models.model is loaded and len(loads) == 1  # no second load


def test_warm_up_without_a_model_is_a_no_op(db):
    scoring._models.__init__()
    assert scoring.warm_up() is None
    assert scoring._models.model is None


def test_scans_become_anomalies_with_readable_explanations_and_incidents(trained, redis_client):
    records = attack_records()
    publish_in_batches(redis_client, "d1", records)

    result = ingest.drain_sensor("d1", redis_client)

    assert result.packets == len(records)
    scan = records["label"] == 1
    scanner = ip_to_text(records["src_ip"][scan][0], 4)
    from_scanner = scan & (records["src_ip"] == records["src_ip"][scan][0]).all(axis=1)
    # every flagged packet keeps its score on its row; representatives of it are anomaly rows
    flagged = set(Packet.objects.filter(anomaly_score__isnull=False).values_list("seq", flat=True))
    assert set(Anomaly.objects.values_list("packet_seq", flat=True)) <= flagged
    probes = set(records["seq"][from_scanner].tolist())
    assert len(flagged & probes) / len(probes) > 0.8
    benign = set(records["seq"][~scan].tolist())
    assert len(flagged & benign) / len(benign) < 0.05
    example = Anomaly.objects.filter(src_ip=scanner).first()
    assert scanner in example.explanation
    assert "port" in example.explanation.lower()
    assert example.score > example.threshold
    # stored as a JSON array of the top 3 features (written as JSON text by the worker)
    keys = {"feature", "index", "contribution", "value", "scaled"}
    assert [set(c) for c in example.contributions] == [keys] * 3
    assert example.contributions[0]["contribution"] >= example.contributions[1]["contribution"]
    assert Incident.objects.filter(src_ip=scanner).count() == 1
    incident = Incident.objects.get(src_ip=scanner)
    # the scanner's probes and the scanned host's answers are its one incident; no other opened
    assert Anomaly.objects.filter(src_ip=scanner).exclude(incident=incident).count() == 0
    assert Anomaly.objects.filter(dst_ip=scanner).exclude(incident=incident).count() == 0
    # nothing is lost: each flagged packet is counted on one incident
    assert sum(Incident.objects.values_list("anomaly_count", flat=True)) == len(flagged)
    assert Anomaly.objects.filter(incident=incident).count() < incident.anomaly_count
    assert list(Incident.objects.opened()) == [incident]


def test_shuffled_task_order_scores_like_in_order(trained, redis_client):
    """Tasks that run late and in any order split the stream into drains at arbitrary points; the
    feature state carried from one drain to the next must give the scores of one in-order drain."""
    records = attack_records()
    publish_in_batches(redis_client, "ordered", records)
    ingest.drain_sensor("ordered", redis_client)
    size = 1000
    arrivals = list(range(len(records) // size))
    random.Random(3).shuffle(arrivals)
    published, drained = 0, []

    for k in arrivals:  # batch k's task arrives once batch k is in the stream, and drains all there is
        while published <= k:
            publish_in_batches(redis_client, "shuffled", records[published * size : (published + 1) * size])
            published += 1
        drained.append(ingest.drain_sensor("shuffled", redis_client).packets)

    assert sum(drained) == len(records)
    assert len([n for n in drained if n]) > 2  # several drains, each starting from the state left before

    def scored(sensor):
        flagged = Packet.objects.filter(sensor__name=sensor, anomaly_score__isnull=False)
        return sorted(flagged.values_list("seq", "anomaly_score"))

    a, b = scored("ordered"), scored("shuffled")
    assert len(a) > 100  # the port scan is there to be scored
    assert [s for s, _ in a] == [s for s, _ in b]
    assert np.allclose([x for _, x in a], [x for _, x in b], rtol=1e-6)


def test_packets_are_stored_without_a_model(redis_client):
    publish_in_batches(redis_client, "nomodel", attack_records()[:3000])

    ingest.drain_sensor("nomodel", redis_client)

    assert Packet.objects.count() == 3000
    assert not Anomaly.objects.exists()


def test_score_pcap_writes_one_row_per_packet(trained, tmp_path):
    pcap = tmp_path / "test.pcap"
    write_pcap(pcap, attack_records())

    call_command("score_pcap", str(pcap), "--out", str(tmp_path / "scores.csv"))

    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows[0] == ["frame", "score", "is_anomaly"]
    assert len(rows) - 1 == 20_000
    assert [int(r[0]) for r in rows[1:4]] == [1, 2, 3]
    assert {r[2] for r in rows[1:]} == {"0", "1"}


def test_evaluate_detector_prints_auc_per_attack(benign_pcap, tmp_path, capsys):
    records = attack_records()
    pcap = tmp_path / "test.pcap"
    write_pcap(pcap, records)
    with open(tmp_path / "labels.csv", "w") as handle:
        handle.write("frame,label,attack\n")
        for frame, label in enumerate(records["label"].tolist(), start=1):
            handle.write(f"{frame},{int(label > 0)},{'port_scan' if label else ''}\n")

    call_command("evaluate_detector", "--train", str(benign_pcap), "--test", str(pcap),
                 "--labels", str(tmp_path / "labels.csv"), "--model", "isolation_forest",
                 "--feature-level", "standard")  # fmt: skip

    out = capsys.readouterr().out
    assert "overall: ROC AUC" in out
    assert "port_scan: ROC AUC" in out
    assert "packets/s" in out


def test_anomaly_api_lists_filters_and_marks_false_positives(trained, redis_client, api):
    publish_in_batches(redis_client, "d2", attack_records())
    ingest.drain_sensor("d2", redis_client)
    anomaly = Anomaly.objects.exclude(src_ip=None).first()  # an IP packet: non-IP ones have no address

    listing = api.get(f"/api/anomalies/?ip={anomaly.src_ip}").json()
    assert (
        listing["count"]
        == Anomaly.objects.filter(src_ip=anomaly.src_ip).count()
        + Anomaly.objects.filter(dst_ip=anomaly.src_ip).exclude(src_ip=anomaly.src_ip).count()
    )
    assert listing["results"][0]["packets_url"].startswith("/api/packets/?sensor=d2&seq_from=")

    response = api.patch(f"/api/anomalies/{anomaly.pk}/", {"false_positive": True}, format="json")
    assert response.status_code == 200
    assert Anomaly.objects.get(pk=anomaly.pk).false_positive
    assert (
        api.patch(f"/api/anomalies/{anomaly.pk}/", {"score": 0}, format="json").json()["score"]
        == anomaly.score
    )


def test_training_from_stored_packets_leaves_out_undisputed_anomalies(trained, redis_client):
    publish_in_batches(redis_client, "d3", attack_records())
    ingest.drain_sensor("d3", redis_client)
    flagged = Anomaly.objects.count()
    Anomaly.objects.filter(pk=Anomaly.objects.first().pk).update(false_positive=True)

    chunks = list(services.records_from_database(None, None, "d3"))

    assert sum(len(c) for c in chunks) == 20_000 - flagged + 1


def test_model_endpoints_need_the_admin_role(api, viewer_api, admin_api, trained):
    assert viewer_api.get("/api/models/").status_code == 200
    for client in (viewer_api, api):  # the viewer, the analyst
        assert client.post(f"/api/models/{trained.pk}/activate").status_code == 403
        assert client.post("/api/models/train", {}, format="json").status_code == 403
    assert admin_api.post(f"/api/models/{trained.pk}/activate").status_code == 200
    assert admin_api.post("/api/models/train", {}, format="json").status_code == 202


def test_train_detector_use_switches_the_configuration_to_the_new_model(freshly_trained):
    from capture.services import get_config

    config = get_config()
    assert (config.ml_model, config.feature_level) == ("isolation_forest", "standard")


def test_demo_training_makes_a_first_model_once(redis_client, capsys):
    update_config({"feature_level": "low"})

    call_command("train_detector", "--demo", "5000", "--model", "isolation_forest")
    call_command("train_detector", "--demo", "5000", "--model", "isolation_forest", "--if-none")

    row = DetectionModel.objects.get()
    assert row.is_active and row.packet_count == 5000
    assert "demo traffic" in row.source
    assert "nothing to train" in capsys.readouterr().out


@pytest.mark.parametrize("rate", [None, 50.0])
def test_demo_training_traffic_has_the_timing_of_the_live_demo(rate):
    # `capture --demo` stretches the simulated timeline to its rate; a model for demo mode must
    # learn that timing, or every live conversation's gaps look anomalous.
    trained = np.concatenate(list(services.records_from_demo(3000, seed=4, rate=rate)))
    live = DemoTraffic(4, attack_prob=0.0).stream(
        rate or DEMO_RATE, 3000, max_delay=1e9, pace=False, start=0.0
    )
    batch, _ = next(live)

    assert len(batch) == len(trained) == 3000
    np.testing.assert_allclose(np.diff(trained["ts"]), np.diff(batch["ts"]), rtol=1e-9, atol=1e-9)
    assert len(trained) / (trained["ts"][-1] - trained["ts"][0]) == pytest.approx(rate or DEMO_RATE, rel=0.3)
