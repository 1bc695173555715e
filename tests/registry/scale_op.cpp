// A custom OpenVINO operation for the tests: y = x * alpha + SCALE_BIAS (the bias is a build flag,
// so two builds of one op type behave differently). Built by tests/registry/custom_op.py.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/op.hpp>

#ifndef SCALE_BIAS
#define SCALE_BIAS 0.0f
#endif

namespace ovbatch_test {

class Scale : public ov::op::Op {
public:
    OPENVINO_OP("OvbatchScale");

    Scale() = default;
    Scale(const ov::Output<ov::Node>& arg, float alpha) : Op({arg}), m_alpha(alpha) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        set_output_type(0, get_input_element_type(0), get_input_partial_shape(0));
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<Scale>(args.at(0), m_alpha);
    }

    bool visit_attributes(ov::AttributeVisitor& visitor) override {
        visitor.on_attribute("alpha", m_alpha);
        return true;
    }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const auto& in = inputs[0];
        auto& out = outputs[0];
        out.set_shape(in.get_shape());
        const float* src = in.data<const float>();
        float* dst = out.data<float>();
        for (size_t i = 0, n = in.get_size(); i < n; ++i) {
            dst[i] = src[i] * m_alpha + SCALE_BIAS;
        }
        return true;
    }

    bool has_evaluate() const override {
        return get_input_element_type(0) == ov::element::f32;
    }

private:
    float m_alpha = 1.0f;
};

}  // namespace ovbatch_test

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    std::make_shared<ov::OpExtension<ovbatch_test::Scale>>(),
}));
