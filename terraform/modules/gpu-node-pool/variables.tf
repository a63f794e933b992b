variable "project_id" {
  description = "Project that owns the cluster."
  type        = string
}

variable "cluster" {
  description = "Cluster id (projects/P/locations/L/clusters/C) or name to add the pool to."
  type        = string
}

variable "location" {
  description = "The cluster's location: a region for a regional cluster, a zone for a zonal one."
  type        = string
}

variable "region" {
  description = "Region of the cluster; zones are looked up here when `zones` is null."
  type        = string
}

variable "name" {
  description = "Node pool name."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.name))
    error_message = "name must be 1-40 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "machine_type" {
  description = "Machine type of the GPU nodes, e.g. g2-standard-8, a2-highgpu-1g, a3-highgpu-8g or n1-standard-8."
  type        = string
}

variable "accelerator_type" {
  description = "GPU type, e.g. nvidia-l4, nvidia-tesla-a100, nvidia-h100-80gb, nvidia-tesla-t4."
  type        = string

  validation {
    condition     = startswith(var.accelerator_type, "nvidia-")
    error_message = "accelerator_type must be an NVIDIA accelerator type name such as nvidia-l4 (see `gcloud compute accelerator-types list`)."
  }
}

variable "accelerator_count" {
  description = "GPUs per node."
  type        = number

  validation {
    condition     = var.accelerator_count >= 1 && floor(var.accelerator_count) == var.accelerator_count
    error_message = "accelerator_count must be a whole number >= 1."
  }
}

variable "gpu_driver_version" {
  description = "GKE-managed NVIDIA driver to install (gpu_driver_installation_config): DEFAULT, LATEST, or INSTALLATION_DISABLED to install it yourself."
  type        = string
  default     = "LATEST"

  validation {
    condition     = contains(["DEFAULT", "LATEST", "INSTALLATION_DISABLED"], var.gpu_driver_version)
    error_message = "gpu_driver_version must be DEFAULT, LATEST or INSTALLATION_DISABLED."
  }
}

variable "zones" {
  description = "Zones for the pool's nodes (node_locations). Null: every zone of the region that offers machine_type (and, for machine types with built-in GPUs, accelerator_type)."
  type        = list(string)
  default     = null

  validation {
    condition     = var.zones == null || try(length(var.zones) > 0, false)
    error_message = "zones must be null (look them up) or a non-empty list."
  }
}

variable "min_nodes" {
  description = "Total minimum number of nodes across all zones (autoscaling total_min_node_count). Keep 0 to scale GPUs to zero."
  type        = number
  default     = 0

  validation {
    condition     = var.min_nodes >= 0
    error_message = "min_nodes must be >= 0."
  }
}

variable "max_nodes" {
  description = "Total maximum number of nodes across all zones (autoscaling total_max_node_count)."
  type        = number

  validation {
    condition     = var.max_nodes >= 1
    error_message = "max_nodes must be >= 1."
  }
}

variable "spot" {
  description = "Use Spot VMs."
  type        = bool
  default     = false
}

variable "queued_provisioning" {
  description = "Queued provisioning (Dynamic Workload Scheduler): nodes come only through ProvisioningRequests, all at once."
  type        = bool
  default     = false
}

variable "flex_start" {
  description = "Flex-start VMs (Dynamic Workload Scheduler); usually together with queued_provisioning."
  type        = bool
  default     = false
}

variable "placement_policy" {
  description = "NONE, or COMPACT to place the nodes close together (needs exactly one zone)."
  type        = string
  default     = "NONE"

  validation {
    condition     = contains(["NONE", "COMPACT"], var.placement_policy)
    error_message = "placement_policy must be NONE or COMPACT."
  }
}

variable "reservation_affinity" {
  description = "Which Compute Engine reservations the nodes consume: NO_RESERVATION, ANY_RESERVATION or SPECIFIC_RESERVATION."
  type        = string
  default     = "NO_RESERVATION"

  validation {
    condition     = contains(["NO_RESERVATION", "ANY_RESERVATION", "SPECIFIC_RESERVATION"], var.reservation_affinity)
    error_message = "reservation_affinity must be NO_RESERVATION, ANY_RESERVATION or SPECIFIC_RESERVATION."
  }
}

variable "reservation_name" {
  description = "Reservation to consume when reservation_affinity is SPECIFIC_RESERVATION (a name, or projects/P/reservations/R for a shared one)."
  type        = string
  default     = null
}

variable "service_account" {
  description = "Email of the node service account."
  type        = string
}

variable "disk_size_gb" {
  description = "Boot disk size."
  type        = number
  default     = 200
}

variable "disk_type" {
  description = "Boot disk type (pd-balanced, pd-ssd, hyperdisk-balanced for A3/G4)."
  type        = string
  default     = "pd-balanced"
}

variable "local_ssd_count" {
  description = "Local SSDs used as ephemeral storage (emptyDir, image layers); 0 for none."
  type        = number
  default     = 0
}

variable "boot_disk_kms_key" {
  description = "Optional CMEK for the boot disks (projects/P/locations/L/keyRings/R/cryptoKeys/K)."
  type        = string
  default     = null
}

variable "image_streaming" {
  description = "Image streaming (gcfs) on the pool."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Kubernetes node labels."
  type        = map(string)
  default     = {}
}

variable "resource_labels" {
  description = "GCP labels on the nodes' VMs."
  type        = map(string)
  default     = {}
}

variable "extra_taints" {
  description = "Taints beyond the nvidia.com/gpu=present:NoSchedule taint every pool gets."
  type = list(object({
    key    = string
    value  = string
    effect = string
  }))
  default = []
}
