"""The network probe and its sources: interfaces, neighbours, Wi-Fi, VPN catalogue, ARP sweep, anchor latency."""
