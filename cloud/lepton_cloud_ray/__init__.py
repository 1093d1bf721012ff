"""The cloud tier on Ray Serve: an exported ONNX model (`lepton-hls export-onnx`) on onnxruntime replicas that
Ray scales (fixed count or autoscaled on ongoing requests, on GPUs when asked), behind the same Open Inference
Protocol HTTP surface as the gateway and the reference cloud server, so `lepton-hls serve --cloud URL` falls back
to it unchanged.

Two deployments make one application (app.py): `OipIngress` (ingress.py) answers HTTP with the gateway's own
OIP app (lepton_host.serving.app: JSON and binary tensors, metadata with the class order, /metrics) and calls
`OnnxModel` (model.py), whose replicas batch concurrent calls (`@serve.batch`) into one onnxruntime run; a call
lost with its replica is sent again to another one. `python -m lepton_cloud_ray` starts it on a local Ray
cluster or an existing one, or writes the `serve deploy` config for a cluster (cli.py; options.py holds the one
mapping from options to Ray's deployment settings).

It runs in its own environment (cloud/ray/requirements.lock, `make cloud-ray-env`): Ray Serve needs
protobuf >= 6, TensorFlow 2.15 needs < 5. Nothing here imports TensorFlow.
"""
