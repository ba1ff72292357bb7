"""Proctor: a self-hosted, real-time integrity server for online interviews and exams."""

__version__ = "0.1.0"
