"""Stage 1, the data (notebook 01): real images from PathMNIST (`sources`), your own
MedMNIST-style ``.npz`` or folder per class (`own_data`), every reader's result checked
(`checks`), split into train/val/test at one resolution and cached (`dataset`); and a stand-in
file of full PathMNIST's sizes for rehearsing the paper profile without the download
(`rehearsal`, not data)."""
