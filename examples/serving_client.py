"""Client for an MNC model served by TensorFlow Serving (REST or gRPC).

Start the server on an export written by ``mnc-export --model model.keras --out export/``::

    docker run -p 8501:8501 -p 8500:8500 \\
        --mount type=bind,source=$PWD/export,target=/models/mnc -e MODEL_NAME=mnc \\
        -t tensorflow/serving

then::

    python examples/serving_client.py cat.jpg --rest http://localhost:8501 \\
        --labels export/1/assets/labels.txt --out predictions/
    python examples/serving_client.py cat.jpg --grpc localhost:8500 --out predictions/

The request / response helpers (``build_rest_request``, ``parse_rest_response``,
``build_grpc_request``, ``parse_grpc_response``) need only TensorFlow and
``tensorflow-serving-api``; turning the response into full-image masks and a picture
(``render``) uses ``mnc_tf.visualize`` (pure TF/NumPy/OpenCV; it does not load the mnc_tf
op library or the model code), so install ``mnc_tf`` on the client machine for that part.

What is tested, against what: ``tests/export/test_serving_client.py`` checks this file's
request building and response parsing against the export's own signatures run locally in
Python, behind small stand-in HTTP / gRPC servers written in the test — those stand-ins are not
TF Serving, and this client has not been run against a real TF Serving server in the tests.
That the export runs in TF Serving's loader is checked separately, in TensorFlow's C-API
Session loader (``tests/export/test_session_loader.py``; see docs/serving.md).

Signatures (see ``mnc_tf.export.serving``): ``serving_default`` takes encoded image bytes
(input ``images``, sent as ``{"b64": ...}`` over REST), ``serving_image_tensor`` takes uint8
``[B, H, W, 3]`` images (input ``images``; nested lists over REST, so prefer the encoded
signature for large images), ``serving_tf_example`` takes serialized ``tf.train.Example`` s
with ``image/encoded`` (input ``examples``).
"""

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np

# Input names of the signatures, as in mnc_tf.export.serving (the tests check they match the
# SavedModel).
SIGNATURE_INPUTS = {
    "serving_default": "images",
    "serving_image_tensor": "images",
    "serving_tf_example": "examples",
}
TF_EXAMPLE_IMAGE_KEY = "image/encoded"


def make_tf_example(encoded):
    """Encoded image bytes → serialized ``tf.train.Example`` with ``image/encoded``."""
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    example = tf.train.Example(features=tf.train.Features(feature={TF_EXAMPLE_IMAGE_KEY: feature}))
    return example.SerializeToString()


def _signature_input(signature_name):
    if signature_name not in SIGNATURE_INPUTS:
        raise ValueError(
            f"signature_name: expected one of {sorted(SIGNATURE_INPUTS)}, got {signature_name!r}"
        )
    return SIGNATURE_INPUTS[signature_name]


def _inputs_for(images, signature_name):
    """Raw client inputs → what the signature takes (bytes list, or a uint8 array)."""
    if signature_name == "serving_image_tensor":
        array = np.asarray(images)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(
                "images: serving_image_tensor needs uint8 [B, H, W, 3], got "
                f"{array.dtype} {array.shape}"
            )
        return array
    if isinstance(images, (bytes, str)) or len(images) == 0:
        raise ValueError("images: expected a non-empty list of encoded image bytes")
    if signature_name == "serving_tf_example":
        return [make_tf_example(e) for e in images]
    return list(images)


def build_rest_request(images, signature_name="serving_default"):
    """The JSON body of a TF Serving REST ``:predict`` call (row / "instances" format).

    Args:
      images: list of encoded image bytes (``serving_default``, ``serving_tf_example``) or a
        uint8 ``[B, H, W, 3]`` array (``serving_image_tensor``).
      signature_name: one of the three export signatures.

    Returns:
      ``{"signature_name": ..., "instances": [...]}``; binary inputs are ``{"b64": ...}``.
    """
    _signature_input(signature_name)
    inputs = _inputs_for(images, signature_name)
    if signature_name == "serving_image_tensor":
        instances = [image.tolist() for image in inputs]
    else:
        # TF Serving decodes {"b64": ...} into the bytes of a DT_STRING tensor element.
        instances = [{"b64": base64.b64encode(b).decode("ascii")} for b in inputs]
    return {"signature_name": signature_name, "instances": instances}


def parse_rest_response(response):
    """A REST ``:predict`` response (dict or JSON text) → dict of batched NumPy arrays.

    Handles the row format (``{"predictions": [{output: value, ...}, ...]}``, what TF
    Serving answers to "instances") and the columnar one (``{"outputs": {output: value}}``).
    """
    if isinstance(response, (str, bytes)):
        response = json.loads(response)
    if "error" in response:
        raise RuntimeError(f"TF Serving error: {response['error']}")
    if "outputs" in response:
        return {k: np.asarray(v) for k, v in response["outputs"].items()}
    predictions = response.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        raise ValueError("response: expected a non-empty 'predictions' list or an 'outputs' dict")
    if not isinstance(predictions[0], dict):  # a single-output signature
        return {"output": np.asarray(predictions)}
    return {k: np.stack([np.asarray(p[k]) for p in predictions]) for k in predictions[0]}


def rest_url(address, model_name="mnc", version=None):
    """``http://host:8501`` → ``http://host:8501/v1/models/<name>[/versions/<v>]:predict``;
    a full ``...:predict`` URL is returned unchanged."""
    if "://" not in address:
        address = "http://" + address
    if address.endswith(":predict"):
        return address
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    return address.rstrip("/") + path + ":predict"


def send_rest(url, body, timeout=60.0):
    """POST ``body`` (the dict of :func:`build_rest_request`) and return the parsed JSON."""
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as e:  # TF Serving puts {"error": ...} in the body
        detail = e.read().decode("utf-8", "replace")
        raise RuntimeError(f"{url}: HTTP {e.code}: {detail}") from None


def build_grpc_request(images, signature_name="serving_default", model_name="mnc", version=None):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for the export.

    Same ``images`` as :func:`build_rest_request`; tensors are built with
    ``tf.make_tensor_proto`` (string ``[B]`` or uint8 ``[B, H, W, 3]``).
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    input_name = _signature_input(signature_name)
    inputs = _inputs_for(images, signature_name)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version:
        request.model_spec.version.value = int(version)
    if signature_name == "serving_image_tensor":
        proto = tf.make_tensor_proto(inputs, dtype=tf.uint8)
    else:
        proto = tf.make_tensor_proto(inputs, dtype=tf.string, shape=[len(inputs)])
    request.inputs[input_name].CopyFrom(proto)
    return request


def parse_grpc_response(response):
    """``PredictResponse`` → dict of batched NumPy arrays (``tf.make_ndarray``)."""
    import tensorflow as tf

    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def send_grpc(address, request, timeout=60.0):
    """Call ``PredictionService/Predict`` on ``host:port`` (insecure channel)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    with grpc.insecure_channel(address, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(request, timeout=timeout)


def render(image, outputs, index=0, labels=None, threshold=0.5, mask_threshold=0.4):
    """One image's response → full-image masks and a picture.

    Args:
      image: the original RGB uint8 ``[H, W, 3]`` (the export maps boxes back to it).
      outputs: parsed response (batched arrays); ``index``: which image of the batch.
      labels: ``{category_id: name}`` (``mnc_tf.export.read_labels`` of the export's
        ``assets/labels.txt``) or ``None``.
      threshold: minimum ``detection_scores``; mask_threshold: mask binarisation.

    Returns:
      ``(picture uint8 [H, W, 3], detections)`` where ``detections`` holds the kept rows:
      ``boxes [n, 4]`` (y1, x1, y2, x2 original pixels), ``scores [n]``, ``classes [n]``
      (category ids) and ``masks`` uint8 ``[n, H, W]``.
    """
    from mnc_tf import visualize

    n = int(np.asarray(outputs["num_detections"])[index])
    scores = np.asarray(outputs["detection_scores"], np.float32)[index, :n]
    keep = scores >= threshold
    boxes = np.asarray(outputs["detection_boxes"], np.float32)[index, :n][keep]
    classes = np.asarray(outputs["detection_classes"]).astype(np.int64)[index, :n][keep]
    soft = np.asarray(outputs["detection_masks"], np.float32)[index, :n][keep]
    masks = visualize.full_image_masks(soft, boxes, image.shape[:2], threshold=mask_threshold)
    picture = visualize.draw_instances(
        image, boxes, masks, classes, scores[keep], labels, score_threshold=threshold
    )
    detections = {"boxes": boxes, "scores": scores[keep], "classes": classes, "masks": masks}
    return picture, detections


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--rest", metavar="URL", help="e.g. http://localhost:8501")
    target.add_argument("--grpc", metavar="HOST:PORT", help="e.g. localhost:8500")
    parser.add_argument("--model-name", default="mnc")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument(
        "--signature",
        default="serving_default",
        choices=sorted(SIGNATURE_INPUTS),
        help="serving_image_tensor sends decoded pixels (large requests)",
    )
    parser.add_argument("--labels", help="assets/labels.txt of the export (class names)")
    parser.add_argument("--out", default="predictions", help="directory for the pictures")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--mask-threshold", type=float, default=0.4)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from mnc_tf import visualize
    from mnc_tf.export.predictor import read_labels  # "<category_id>\t<name>" lines

    labels = read_labels(args.labels) if args.labels else None
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        with open(path, "rb") as f:
            encoded = f.read()
        decode = lambda data=encoded: tf.io.decode_image(
            data, channels=3, expand_animations=False
        ).numpy()
        # Encoded signatures: the server decodes (and validates) the bytes; decode here only
        # for the picture, after the answer.
        image = decode() if args.signature == "serving_image_tensor" else None
        payload = image[None] if image is not None else [encoded]
        if args.rest:
            body = build_rest_request(payload, args.signature)
            url = rest_url(args.rest, args.model_name, args.version)
            outputs = parse_rest_response(send_rest(url, body, args.timeout))
        else:
            request = build_grpc_request(payload, args.signature, args.model_name, args.version)
            outputs = parse_grpc_response(send_grpc(args.grpc, request, args.timeout))
        image = decode() if image is None else image
        picture, detections = render(image, outputs, 0, labels, args.threshold, args.mask_threshold)
        out_path = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
        visualize.save_visualization(out_path, picture)
        print(f"{path}: {len(detections['scores'])} instances -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
