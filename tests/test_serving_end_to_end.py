"""The whole scheme on a package built by `lepton-hls build` (slow: it compiles the C simulation): the
reference cloud server on the original QKeras model, the gateway on the emulated board through the real pynq
library, Triton's client in front, and a board fault in the middle."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import running_gateway

from lepton_host.manifest import load_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from lepton_hls.build import build_package
    from lepton_hls.build_config import load_config

    out = tmp_path_factory.mktemp("pkg") / "jet_tagger"
    build_package("jet_tagger", out, load_config(), verify_samples=200, force=True)
    return out


@pytest.fixture(scope="module")
def cloud(built):
    from lepton_cloud.server import create_cloud_server
    from lepton_host.serving.runner import ServerThread

    app, service = create_cloud_server(built)
    with ServerThread(app) as server:
        yield server, service


def test_gateway_on_the_emulated_board_with_the_qkeras_cloud(built, cloud):
    from lepton_host.backends import open_backend

    cloud_server, cloud_service = cloud
    m = load_manifest(built)
    backend = open_backend(built, kind="emulated-board", engine="fast")
    reference = open_backend(built, kind="emulator", engine="fast")
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    with running_gateway(built, backend, cloud_server.url) as (gw, service):
        client = triton.InferenceServerClient(gw.url.removeprefix("http://"))
        for binary in (True, False):
            inp = triton.InferInput(m.input.name, [64, 16], "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = triton.InferRequestedOutput(m.output.name, binary_data=binary)
            r = client.infer(m.model.name, [inp], outputs=[out])
            assert r.get_response()["parameters"]["served_by"] == "edge"
            # bit-exact with the package's emulator (float32 on the wire holds the output grid exactly)
            assert np.array_equal(r.as_numpy(m.output.name), reference.predict(x).astype(np.float32))
        backend.accelerator.device.inject("hang")
        inp = triton.InferInput(m.input.name, [8, 16], "FP32")
        inp.set_data_from_numpy(x[:8])
        r = client.infer(m.model.name, [inp])
        assert r.get_response()["parameters"]["served_by"] == "cloud"
        np.testing.assert_allclose(r.as_numpy(m.output.name), cloud_service.model(x[:8]), atol=1e-6)
        backend.accelerator.device.clear()
    reference.close()
