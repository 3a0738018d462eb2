"""Models: the network factory, pretrained loading, the LightningModule and checkpoint loading."""
