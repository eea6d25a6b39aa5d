"""Call recordings: MixMonitor started on answer, the file index and retention, playback over HTTP.

May import ``acd``, the service's plumbing, the AMI link and the order domain; never the console.
"""
