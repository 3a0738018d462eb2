"""Export: checkpoint -> verified ONNX, int8 ONNX and Keras .h5 files with their metadata."""
