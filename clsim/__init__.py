"""clsim: continual and federated learning simulator for pretrained text models on drifting streams."""
__version__ = "0.1.0"
