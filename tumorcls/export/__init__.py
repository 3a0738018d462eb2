"""Export: checkpoint -> verified ONNX, int8 ONNX and Keras .h5 files with their metadata (the contract they
carry is tumorcls.model_file). The stages are imported from their modules (``tumorcls.export.run.export_checkpoint``,
``.to_onnx.export_onnx``, ``.to_keras.export_keras``, ``.int8``, ``.targets``): this package re-exports nothing, so
``export.py`` checks its output paths (``.targets``) before torch, ONNX and TensorFlow load."""
