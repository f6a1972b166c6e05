"""policyengine: policy-as-code governance for enterprise AI."""

__version__ = "0.1.0"
