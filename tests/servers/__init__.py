"""Test doubles for the HTTP chat backend: a scripted OpenAI-compatible server and a fault-injecting proxy."""
