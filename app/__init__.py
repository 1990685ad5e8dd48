"""mnist-codec: compress 28x28 MNIST digits to 24 bytes with a learned autoencoder."""
