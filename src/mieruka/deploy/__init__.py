"""Deployment: lower-precision graphs (:mod:`~mieruka.deploy.precision`), ONNX Runtime's execution providers
(:mod:`~mieruka.deploy.providers`) and OpenVINO IR (:mod:`~mieruka.deploy.openvino`)."""
