"""herdcast's builder: freezes the agent and lays out a PXE-bootable TFTP root."""
