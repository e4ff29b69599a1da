"""The classifiers every later stage trains or uses: the ConvNet and ResNet-18 (`convnet`,
`networks`), their augmentations (`augmentation`), losses (`losses`), metrics (`metrics`) and the
one training loop (`training`). The real-trained judge of notebook 03 (a cached stage: `judge`),
the embedding network of notebook 04, the downstream models of notebooks 05-06 and the audit's
reference models of notebook 07 are all trained by it."""
