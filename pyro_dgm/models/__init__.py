"""The Model API (``Model``, ``VAE``, ``VI``, ``ML``, ``GAN``): not built yet, see the Model API issue."""
