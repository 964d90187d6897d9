"""GenieVM provider for AWS EC2 instances: EBS snapshots read and written through the EBS direct APIs."""
