"""sparft: self-paced reinforcement fine-tuning (SPaRFT) and its peer data-selection methods."""

__version__ = "0.1.0"
