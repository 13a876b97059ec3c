"""The GPU path without a GPU: the agent discovers GPUs through nvidia-smi (here a
stand-in script on PATH that prints what the real one prints), the scheduler gives them
out, and each task sees only its own through CUDA_VISIBLE_DEVICES."""

import os
import stat

from conftest import Master

FAKE_NVIDIA_SMI = """#!/bin/sh
# Answers the query kiln-agent makes, like two H100s would.
echo "0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA H100 80GB HBM3, 81559"
echo "1, GPU-66666666-7777-8888-9999-000000000000, NVIDIA H100 80GB HBM3, 81559"
"""


def test_gpus_are_discovered_allocated_and_isolated(tmp_path):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    master = Master(tmp_path / "m", slots=4, discover_gpus=True,
                    env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}).start()
    try:
        client = master.client()
        agent = client.agents()[0]
        assert [g["index"] for g in agent["gpus"]] == [0, 1]
        assert agent["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"

        probe = ["sh", "-c", "echo \"cuda=[$CUDA_VISIBLE_DEVICES]\"; sleep 1"]
        one = client.submit(probe, gpus=1)
        other = client.submit(probe, gpus=1)
        none = client.submit(probe)
        third = client.submit(probe, gpus=1)  # both GPUs are taken: waits
        for j in (one, other, none):
            client.wait_state(j["id"], "FINISHED")
        seen = {j["id"]: client.all_logs(j["id"])[0]["text"] for j in (one, other, none)}
        assert sorted([seen[one["id"]], seen[other["id"]]]) == ["cuda=[0]", "cuda=[1]"]
        assert seen[none["id"]] == "cuda=[]"
        client.wait_state(third["id"], "FINISHED")
        assert client.job(third["id"])["started_at"] >= min(
            client.job(one["id"])["finished_at"], client.job(other["id"])["finished_at"])
        status, body = client.raw("POST", "/api/v1/jobs",
                                  body=b'{"command": ["true"], "resources": {"gpus": 3}}')
        assert status == 409 and "2 GPUs" in body["error"]["message"]
    finally:
        master.stop()
