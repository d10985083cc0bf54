"""The embedded default: the same presets as local clusters, limits enforced, same API."""

import json

import pytest

from science_gateway import dask as sg_dask
from science_gateway.core.presets import ENV_VAR, DaskPresets


def local_env(max_workers=2):
    presets = DaskPresets(presets={"tiny": {"cores": 1, "memory_gb": 1, "max_workers": max_workers}})
    return {ENV_VAR: json.dumps(presets.user_view(backend="local", groups=["astro"], max_dask_workers=None))}


def test_local_preset_cluster_scales_computes_and_enforces_limits():
    env = local_env()
    assert sg_dask.presets(env)["presets"]["tiny"]["max_workers"] == 2
    with sg_dask.cluster("tiny", environ=env) as cluster:
        assert isinstance(cluster, sg_dask.GatewayLocalCluster)
        cluster.scale(2)
        with cluster.get_client() as client:
            client.wait_for_workers(2, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result() == 6
            workers = client.scheduler_info()["workers"].values()
            assert {w["nthreads"] for w in workers} == {1}
        with pytest.raises(sg_dask.DaskLimitError, match="at most 2 workers"):
            cluster.scale(3)
        with pytest.raises(sg_dask.DaskLimitError, match="at most 2 workers"):
            cluster.adapt(minimum=0, maximum=5)
        adaptive = cluster.adapt(minimum=0)
        assert adaptive.maximum == 2
        # a second cluster shares the user's limit with the first
        with sg_dask.cluster("tiny", environ=env) as other:
            with pytest.raises(sg_dask.DaskLimitError, match="other clusters hold 2"):
                other.scale(1)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(sg_dask.DaskPresetError, match="presets you may use: tiny"):
        sg_dask.cluster("huge", environ=local_env())


def test_local_cluster_accepts_only_its_own_credentials():
    from distributed import Client
    from distributed.security import Security

    with sg_dask.cluster("tiny", environ=local_env()) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:"), address
        cluster.scale(1)
        with cluster.get_client() as client:
            client.wait_for_workers(1, timeout=60)
            assert client.submit(sum, [1, 2]).result() == 3
        port = address.rsplit(":", 1)[1]
        # someone else's credentials (another cluster's), or none at all: no way in
        for attempt in (
            lambda: Client(address, security=Security.temporary(), timeout="5s"),
            lambda: Client(f"tcp://127.0.0.1:{port}", timeout="5s"),
        ):
            with pytest.raises((OSError, TimeoutError)):
                attempt().close()


def test_the_worker_jobs_folders_are_the_users_alone(tmp_path):
    import os
    import stat

    from science_gateway.dask.clusters import _user_directory

    made = _user_directory(str(tmp_path / "new" / "tls"), private=True)
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    for private in (True, False):
        os.chmod(loose, 0o755)
        assert stat.S_IMODE(os.stat(_user_directory(str(loose), private=private)).st_mode) == 0o700
    assert _user_directory("") is None
    with pytest.raises(ValueError, match="tls_directory is empty"):
        _user_directory("", private=True)
    if os.getuid() == 0:  # a folder of another uid: refused for credentials, left alone for logs
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o755)
        os.chmod(theirs, 0o755)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to uid 65534, not to you"):
            _user_directory(str(theirs), private=True)
        _user_directory(str(theirs))
        assert stat.S_IMODE(os.stat(theirs).st_mode) == 0o755


def test_the_dashboard_answers_only_its_own_user():
    import os
    import subprocess
    import urllib.request

    with sg_dask.cluster("tiny", environ=local_env()) as cluster:
        port = cluster.scheduler_info["services"]["dashboard"]
        url = f"http://127.0.0.1:{port}/status"
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        if os.getuid() != 0:
            pytest.skip("connecting as another unix user needs root")
        fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=30).status)"
        other = subprocess.run(["/usr/bin/python3", "-c", fetch], user="nobody", cwd="/tmp", capture_output=True,
                               text=True, timeout=60)
        assert other.returncode != 0, other.stdout
        assert "RemoteDisconnected" in other.stderr or "Connection reset" in other.stderr, other.stderr[-500:]
