"""The cloud tier: the reference OIP server that runs a package's original (Q)Keras model on a GPU or CPU
(`server`), and the export of that model to a Triton model repository (`triton_export`). It needs TensorFlow
(`pip install 'lepton-hls[cloud]'`) and shares the gateway's HTTP stack (lepton_host.serving)."""
