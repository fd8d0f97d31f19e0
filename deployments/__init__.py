"""Rollout targets, image build/push and the arrival watcher."""
