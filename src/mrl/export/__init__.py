"""``mrl export``: a model folder gains an ONNX encoder (fp32, int8), checked per prefix before it commits."""
