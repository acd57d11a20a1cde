public enum CUDADriverPlaceholder {}
