"""Call recordings: MixMonitor started on answer, the file index and retention, playback over HTTP.

May import ``acd``, the service's plumbing, the AMI link, the order domain and
``ivr.values`` (the checks on values from the PBX); never the console.
"""
