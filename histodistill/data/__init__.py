"""Stage 1, the data (notebook 01): real images from PathMNIST, a MedMNIST-style ``.npz`` or
a folder per class, checked (`sources`), split into train/val/test at one resolution and cached
(`dataset`); and a stand-in file of full PathMNIST's sizes for rehearsing the paper profile
without the download (`rehearsal`, not data)."""
