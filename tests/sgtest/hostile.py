"""The hostile-option table every spawner must refuse (Slurm, Kubernetes): for the demo user of
group ``astro`` (partitions cpu, long; accounts astro-2024, astro-dev), where the group
``students`` owns the partition ``debug`` and the account ``teaching``. Each entry is refused
with 4xx before the scheduler sees anything."""

import pytest

HOSTILE = [
    pytest.param({"cores": "1; touch /tmp/pwned"}, id="shell-metacharacters"),
    pytest.param({"partition": "cpu\n#SBATCH --uid=0"}, id="newline-in-partition"),
    pytest.param({"account": "astro-2024 --uid=0"}, id="option-in-account"),
    pytest.param({"cores": 64}, id="too-many-cores"),
    pytest.param({"memory_gb": -1}, id="negative-memory"),
    pytest.param({"walltime_hours": 10**9}, id="huge-walltime"),
    pytest.param({"gpus": 1}, id="gpus-not-allowed"),
    pytest.param({"batch_script": "#!/bin/sh\nid"}, id="unknown-key-batch-script"),
    pytest.param({"req_options": "--uid=0"}, id="unknown-key-req-options"),
    pytest.param({"partition": "debug"}, id="partition-of-another-group"),
    pytest.param({"account": "teaching"}, id="account-of-another-group"),
    pytest.param({"cores": [1, 2]}, id="list-value"),
]

#: KubeSpawner's own user_options paths: a profile, its options, unlisted choices, trait names
KUBESPAWNER_OPTIONS = [
    pytest.param({"profile": "gpu"}, id="profile"),
    pytest.param({"profile": "x", "profile-option-x--image": "evil"}, id="profile-option"),
    pytest.param({"image--unlisted-choice": "evil/image:latest"}, id="unlisted-choice"),
    pytest.param({"image": "evil/image:latest"}, id="trait-image"),
    pytest.param({"uid": 0}, id="trait-uid"),
    pytest.param({"cpu_limit": 64}, id="trait-cpu-limit"),
    pytest.param({"node_selector": {"kubernetes.io/hostname": "x"}}, id="trait-node-selector"),
    pytest.param({"kubespawner_override": {"privileged": True}}, id="kubespawner-override"),
]
