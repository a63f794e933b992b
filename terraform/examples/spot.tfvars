# Cheap, preemptible capacity in a zonal cluster: a spot T4 pool (N1 with an
# attached GPU, so its zone is listed) and a spot A100 pool placed COMPACT in
# one zone for multi-node jobs.
project_id = "my-project-id"
region     = "us-central1"
zone       = "us-central1-a"
name       = "jobgen"

master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "office" },
]

deletion_protection = false

gpu_pools = [
  {
    name              = "t4-spot"
    machine_type      = "n1-standard-8"
    accelerator_type  = "nvidia-tesla-t4"
    accelerator_count = 1
    zones             = ["us-central1-a"]
    max_nodes         = 6
    spot              = true
  },
  {
    name              = "a100-spot-compact"
    machine_type      = "a2-highgpu-2g"
    accelerator_type  = "nvidia-tesla-a100"
    accelerator_count = 2
    zones             = ["us-central1-a"]
    max_nodes         = 4
    spot              = true
    placement_policy  = "COMPACT"
  },
]
