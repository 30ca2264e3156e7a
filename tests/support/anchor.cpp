// Placeholder so the support library is never empty.
namespace ifm::test { void support_anchor() {} }
