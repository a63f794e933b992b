# A Dynamic Workload Scheduler pool: queued provisioning (nodes come only
# through ProvisioningRequests, all at once, e.g. via Kueue), flex-start VMs,
# no reservations, min 0; plus an on-demand L4 pool for small jobs.
project_id = "my-project-id"
region     = "us-central1"
name       = "jobgen"

master_authorized_networks = [
  { cidr_block = "203.0.113.0/24", display_name = "office" },
]

gpu_pools = [
  {
    name                = "h100-dws"
    machine_type        = "a3-highgpu-8g"
    accelerator_type    = "nvidia-h100-80gb"
    accelerator_count   = 8
    max_nodes           = 4
    queued_provisioning = true
    flex_start          = true
    reservation         = "NO_RESERVATION"
    disk_type           = "pd-ssd"
    disk_size_gb        = 500
  },
  {
    name              = "l4"
    machine_type      = "g2-standard-8"
    accelerator_type  = "nvidia-l4"
    accelerator_count = 1
    max_nodes         = 2
  },
]
