"""Telephony scripts over FastAGI: the inbound IVR menus and after-call survey, call-backs,
and the dialer for return visits (回访).

May import ``acd``, the service's plumbing, the AMI link and the order domain; never the console.
"""
