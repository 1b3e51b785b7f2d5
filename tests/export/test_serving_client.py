"""examples/serving_client.py: REST / gRPC requests and responses, against the SavedModel's own
signatures run locally in Python, behind small local stand-in servers written here. These are
not TF Serving: what shows that the export runs in TF Serving's loader is
test_session_loader.py (TensorFlow's C-API Session loader)."""

import base64
import importlib.util
import json
import pathlib
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import tensorflow as tf
from export_testutil import CATEGORY_IDS, CLASS_NAMES, scene
from PIL import Image

from mnc_tf.core.masks import paste_masks

_CLIENT_PATH = pathlib.Path(__file__).resolve().parents[2] / "examples" / "serving_client.py"


@pytest.fixture(scope="module")
def client():
    spec = importlib.util.spec_from_file_location("serving_client", _CLIENT_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    image = scene(50, 84, seed=11)
    path = tmp_path_factory.mktemp("client") / "scene.png"
    Image.fromarray(image).save(path)
    return image, path.read_bytes()


def _signature_inputs(loaded, signature, inputs):
    """Feed already-decoded request inputs {name: ndarray} to a signature, as a server does."""
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    assert set(inputs) == set(specs), "the client must use the signature's input names"
    feed = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
    return {k: v.numpy() for k, v in fn(**feed).items()}


def _rest_instances_to_inputs(body, input_name):
    """Decode a REST "instances" body for a one-input signature, following the documented
    REST API ({"b64": ...} → bytes; nested lists → a dense tensor). A stand-in, not a server."""
    instances = json.loads(json.dumps(body))["instances"]  # exactly what goes on the wire
    if isinstance(instances[0], dict) and set(instances[0]) == {"b64"}:
        return {input_name: np.array([base64.b64decode(i["b64"]) for i in instances], object)}
    return {input_name: np.array(instances, np.uint8)}


def _rest_response(outputs):
    """The documented row-format answer to an "instances" request, through JSON (stand-in)."""
    batch = len(outputs["num_detections"])
    predictions = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(batch)]
    return json.dumps({"predictions": predictions})


def test_signature_input_names_match_the_export(client, loaded_export):
    for name, input_name in client.SIGNATURE_INPUTS.items():
        assert list(loaded_export.signatures[name].structured_input_signature[1]) == [input_name]


@pytest.mark.parametrize(
    "signature", ["serving_default", "serving_tf_example", "serving_image_tensor"]
)
def test_rest_request_and_response_round_trip(client, loaded_export, picture, signature):
    image, encoded = picture
    payload = image[None] if signature == "serving_image_tensor" else [encoded, encoded]
    body = client.build_rest_request(payload, signature)
    assert body["signature_name"] == signature
    inputs = _rest_instances_to_inputs(body, client.SIGNATURE_INPUTS[signature])
    served = _signature_inputs(loaded_export, signature, inputs)
    parsed = client.parse_rest_response(_rest_response(served))
    direct = _signature_inputs(loaded_export, "serving_image_tensor", {"images": image[None]})
    for key, value in direct.items():
        assert parsed[key].shape[1:] == value.shape[1:]
        np.testing.assert_allclose(parsed[key][0], value[0], atol=1e-5, err_msg=key)
    if signature == "serving_default":
        assert body["instances"] == [{"b64": base64.b64encode(encoded).decode()}] * 2


@pytest.mark.parametrize(
    "signature", ["serving_default", "serving_tf_example", "serving_image_tensor"]
)
def test_grpc_request_and_response_round_trip(client, loaded_export, picture, signature):
    from tensorflow_serving.apis import predict_pb2

    image, encoded = picture
    payload = image[None] if signature == "serving_image_tensor" else [encoded]
    request = client.build_grpc_request(payload, signature, model_name="mnc", version=3)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert request.model_spec.name == "mnc" and request.model_spec.signature_name == signature
    assert request.model_spec.version.value == 3
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    served = _signature_inputs(loaded_export, signature, inputs)
    response = predict_pb2.PredictResponse()
    for key, value in served.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    response = predict_pb2.PredictResponse.FromString(response.SerializeToString())
    parsed = client.parse_grpc_response(response)
    direct = _signature_inputs(loaded_export, "serving_image_tensor", {"images": image[None]})
    for key, value in direct.items():
        assert parsed[key].dtype == value.dtype, key
        np.testing.assert_allclose(parsed[key], value, atol=1e-5, err_msg=key)


def test_render_pastes_masks_into_the_original_image(client, loaded_export, picture):
    image, _ = picture
    out = _signature_inputs(loaded_export, "serving_image_tensor", {"images": image[None]})
    labels = dict(zip(CATEGORY_IDS, CLASS_NAMES, strict=True))
    drawn, det = client.render(image, out, 0, labels, threshold=0.0)
    n = int(out["num_detections"][0])
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert det["masks"].shape == (n, 50, 84)
    expected = paste_masks(
        out["detection_masks"][0, :n], out["detection_boxes"][0, :n], (50, 84), threshold=0.4
    )
    np.testing.assert_array_equal(det["masks"], np.asarray(expected))
    assert set(det["classes"].tolist()) <= set(CATEGORY_IDS)
    if det["masks"].any():
        assert not np.array_equal(drawn, image)


def test_parse_rest_response_formats_and_errors(client):
    columnar = {"outputs": {"num_detections": [2], "detection_scores": [[0.5, 0.25]]}}
    parsed = client.parse_rest_response(columnar)
    np.testing.assert_array_equal(parsed["detection_scores"], [[0.5, 0.25]])
    with pytest.raises(RuntimeError, match="bad image"):
        client.parse_rest_response('{"error": "bad image"}')
    with pytest.raises(ValueError, match="images"):
        client.build_rest_request(b"raw bytes, not a list")
    with pytest.raises(ValueError, match="signature_name"):
        client.build_rest_request([b"x"], "serving_nope")
    assert client.rest_url("localhost:8501") == "http://localhost:8501/v1/models/mnc:predict"
    assert client.rest_url("http://h:1/", "m", 4) == "http://h:1/v1/models/m/versions/4:predict"


# ---- the client's main() against small local stand-ins for the REST and gRPC servers ----


def _serve_rest(loaded):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signature = body["signature_name"]
            name = list(loaded.signatures[signature].structured_input_signature[1])[0]
            try:
                out = _signature_inputs(loaded, signature, _rest_instances_to_inputs(body, name))
                reply, code = _rest_response(out).encode(), 200
            except tf.errors.InvalidArgumentError as e:
                reply, code = json.dumps({"error": e.message}).encode(), 400
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_main_over_rest_writes_a_picture(client, loaded_export, picture, tmp_path, export_base):
    image, encoded = picture
    (tmp_path / "scene.png").write_bytes(encoded)
    (tmp_path / "junk.jpg").write_bytes(b"nope")
    server = _serve_rest(loaded_export)
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        labels = str(export_base / "1" / "assets" / "labels.txt")
        argv = [str(tmp_path / "scene.png"), "--rest", address, "--labels", labels]
        assert client.main(argv + ["--out", str(tmp_path / "out"), "--threshold", "0"]) == 0
        with Image.open(tmp_path / "out" / "scene.png") as png:
            assert png.size == (84, 50)
        with pytest.raises(RuntimeError, match="HTTP 400.*not an encoded"):
            client.main([str(tmp_path / "junk.jpg"), "--rest", address, "--out", str(tmp_path)])
    finally:
        server.shutdown()


def test_main_over_grpc_writes_a_picture(client, loaded_export, picture, tmp_path):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802  (gRPC's naming)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = _signature_inputs(loaded_export, request.model_spec.signature_name, inputs)
            response = predict_pb2.PredictResponse()
            for key, value in out.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        _, encoded = picture
        (tmp_path / "scene.png").write_bytes(encoded)
        argv = [str(tmp_path / "scene.png"), "--grpc", f"127.0.0.1:{port}", "--threshold", "0"]
        assert client.main(argv + ["--out", str(tmp_path / "out")]) == 0
        with Image.open(tmp_path / "out" / "scene.png") as png:
            assert png.size == (84, 50)
    finally:
        server.stop(None)
