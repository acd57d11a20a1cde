public enum VAttentionPlaceholder {}
