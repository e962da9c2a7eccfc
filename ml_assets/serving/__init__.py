"""The online half: event collector, online features, predictions with A/B, notifications."""
