"""Sandbox provider: a simulated WhatsApp connection speaking the provider contract.

Standard library only, so its image needs nothing but a Python interpreter.
"""
