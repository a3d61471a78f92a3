"""PyTorch side of cflnet-sdk: the full CFL-Net, its losses, data, training and metrics."""
